//! Conformance with Istio's `istio-iptables`: every case of
//! `shared/conformance/istio-iptables/cases.json` is rendered by the rule builder and
//! by the real binary (`mesh-cni redirect --dry-run`) and compared with Istio's golden
//! output as rule sets (per family, per table: the declared chains as a set, each
//! chain's rules in order, `-I` insertions resolved).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use mesh_cni::{flags, rules};
use serde_json::Value;

fn conformance_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/istio-iptables"
    ))
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    chains: BTreeSet<String>,
    rules: BTreeMap<String, Vec<String>>,
}

/// family index -> table -> contents
type Parsed = Vec<BTreeMap<String, Table>>;

fn parse(text: &str) -> Parsed {
    let mut fams: Parsed = vec![BTreeMap::new()];
    let mut last_table: Option<String> = None;
    let mut cur: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line == "iptables-save" || line == "ip6tables-save" {
            continue;
        }
        if line.starts_with("# ip6tables-restore") {
            fams.push(BTreeMap::new());
            last_table = None;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            let t = t.trim().to_string();
            // Tables come sorted within a family: a non-increasing name starts IPv6.
            if last_table.as_ref().is_some_and(|l| *l >= t) {
                fams.push(BTreeMap::new());
            }
            last_table = Some(t.clone());
            fams.last_mut().unwrap().entry(t.clone()).or_default();
            cur = Some(t);
            continue;
        }
        if line == "COMMIT" {
            cur = None;
            continue;
        }
        let table = fams
            .last_mut()
            .unwrap()
            .get_mut(cur.as_ref().expect("rule outside a table"))
            .unwrap();
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks[0] {
            "-N" => {
                table.chains.insert(toks[1].to_string());
            }
            "-A" => table
                .rules
                .entry(toks[1].to_string())
                .or_default()
                .push(toks[2..].join(" ")),
            "-I" => {
                let (pos, rest) = match toks[2].parse::<usize>() {
                    Ok(n) => (n, &toks[3..]),
                    Err(_) => (1, &toks[2..]),
                };
                let v = table.rules.entry(toks[1].to_string()).or_default();
                let at = (pos - 1).min(v.len());
                v.insert(at, rest.join(" "));
            }
            other => panic!("unexpected line {other}: {line}"),
        }
    }
    fams.retain(|f| !f.is_empty());
    fams
}

struct Case {
    name: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    golden: String,
}

fn cases() -> Vec<Case> {
    let dir = conformance_dir();
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("base_config.json")).unwrap())
            .unwrap();
    let all: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    assert_eq!(all.len(), 27, "expected Istio's 27 cases");
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    all.iter()
        .map(|c| {
            let mut args = strs(&base["flags"]);
            args.extend(strs(&c["flags"]));
            let cfg = &c["config"];
            if cfg["EnableIPv6"].as_bool() == Some(true) {
                args.push("--ipv6".into());
            }
            for (field, flag) in [
                ("DNSServersV4", "--dns-servers-v4"),
                ("DNSServersV6", "--dns-servers-v6"),
            ] {
                let servers = strs(&cfg[field]);
                if !servers.is_empty() {
                    args.push(flag.into());
                    args.push(servers.join(","));
                }
            }
            let mut env = BTreeMap::new();
            for src in [&base["env"], &c["env"]] {
                if let Some(m) = src.as_object() {
                    for (k, v) in m {
                        env.insert(k.clone(), v.as_str().unwrap().to_string());
                    }
                }
            }
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                args,
                env,
                golden: std::fs::read_to_string(dir.join(c["golden"].as_str().unwrap())).unwrap(),
            }
        })
        .collect()
}

fn render(case: &Case) -> String {
    let parsed = flags::parse(&case.args, |k| case.env.get(k).cloned())
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    rules::build(&parsed.params).render()
}

#[test]
fn all_istio_cases_match_as_rule_sets() {
    let mut failures = Vec::new();
    for case in cases() {
        let ours = render(&case);
        let (got, want) = (parse(&ours), parse(&case.golden));
        if got != want {
            failures.push(format!(
                "case {}:\n--- ours\n{ours}\n--- istio\n{}\n--- ours parsed\n{got:#?}\n--- istio parsed\n{want:#?}",
                case.name, case.golden
            ));
        }
        // Our own output is externally visible: keep it under golden files.
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
            .join(format!("{}.rules", case.name));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &ours).unwrap();
        } else {
            let stored = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
            assert_eq!(stored, ours, "golden {} differs", path.display());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 27 cases differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn binary_dry_run_reproduces_every_case() {
    for case in cases() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh-cni"));
        cmd.arg("redirect").arg("--dry-run").args(&case.args);
        // Only the case's environment: istio-iptables reads many variables.
        cmd.env_clear();
        cmd.envs(&case.env);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            parse(&stdout),
            parse(&case.golden),
            "case {} via the binary:\n{stdout}",
            case.name
        );
    }
}

#[test]
fn bad_flag_is_named_and_exits_non_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-cni"))
        .args(["redirect", "--dry-run", "-p", "99999"])
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("99999"));
    assert!(out.stdout.is_empty());
}
