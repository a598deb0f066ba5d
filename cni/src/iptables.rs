//! Applying and removing a [`FamilyRules`] in the current network namespace with
//! `iptables-restore --noflush`, atomically (one transaction per family) and
//! idempotently: our `ISTIO_*` chains are declared with `:CHAIN - [0:0]` (created, or
//! flushed when they exist), stale chains are deleted, and rules we put into built-in
//! chains are deleted before being re-added, so a second run replaces, never duplicates.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::flags::BackendChoice;
use crate::rules::{Family, FamilyRules, Rule, BUILTIN_CHAINS};

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("cannot run {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("{bin} failed ({status}): {stderr}\ninput was:\n{input}")]
    Failed {
        bin: String,
        status: String,
        stderr: String,
        input: String,
    },
    #[error(transparent)]
    Nft(#[from] crate::nftables::NftError),
}

/// Which iptables implementation writes the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    fn bin(self, f: Family, tool: &str) -> String {
        let base = match f {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let kind = match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        };
        if tool.is_empty() {
            format!("{base}-{kind}")
        } else {
            format!("{base}-{kind}-{tool}")
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }
}

fn run(bin: &str, args: &[&str], input: Option<&str>) -> Result<String, IptablesError> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| IptablesError::Spawn {
            bin: bin.to_string(),
            source: e,
        })?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A write error surfaces as the tool's own failure below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| IptablesError::Spawn {
        bin: bin.to_string(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(IptablesError::Failed {
            bin: bin.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            input: input.unwrap_or_default().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Picks the backend: an explicit choice wins; otherwise the one whose nat table
/// holds more rules in the current netns (the host's, for the CNI plugin), nft on a tie.
pub fn detect(choice: BackendChoice) -> Backend {
    match choice {
        BackendChoice::Nft => Backend::Nft,
        BackendChoice::Legacy => Backend::Legacy,
        BackendChoice::Auto => {
            let count = |b: Backend| {
                run(&b.bin(Family::V4, "save"), &["-t", "nat"], None)
                    .map(|s| s.lines().filter(|l| l.starts_with("-A ")).count())
                    .unwrap_or(0)
            };
            let (legacy, nft) = (count(Backend::Legacy), count(Backend::Nft));
            let chosen = if legacy > nft {
                Backend::Legacy
            } else {
                Backend::Nft
            };
            tracing::info!(
                legacy_rules = legacy,
                nft_rules = nft,
                backend = chosen.name(),
                "iptables backend detected"
            );
            chosen
        }
    }
}

/// One table of an `iptables-save` dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// `(chain, policy)`; policy is `-` for user chains.
    pub chains: Vec<(String, String)>,
    /// `-A …` lines, in order.
    pub rules: Vec<String>,
}

/// A parsed `iptables-save` dump (comments and counters dropped).
pub type Saved = BTreeMap<String, SavedTable>;

pub fn parse_save(text: &str) -> Saved {
    let mut out = Saved::new();
    let mut cur: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            let t = t.trim().to_string();
            out.entry(t.clone()).or_default();
            cur = Some(t);
        } else if let (Some(rest), Some(t)) = (line.strip_prefix(':'), &cur) {
            let mut it = rest.split_whitespace();
            let name = it.next().unwrap_or_default().to_string();
            let policy = it.next().unwrap_or("-").to_string();
            out.get_mut(t).expect("table").chains.push((name, policy));
        } else if let (true, Some(t)) = (line.starts_with("-A "), &cur) {
            out.get_mut(t).expect("table").rules.push(line.to_string());
        }
    }
    out
}

/// `iptables-save` of the current netns.
pub fn save(b: Backend, f: Family) -> Result<Saved, IptablesError> {
    Ok(parse_save(&run(&b.bin(f, "save"), &[], None)?))
}

fn is_ours(chain: &str) -> bool {
    chain.starts_with("ISTIO_")
}

fn jump_target(line: &str) -> Option<&str> {
    let mut it = line.split_whitespace();
    while let Some(t) = it.next() {
        if t == "-j" || t == "-g" {
            return it.next();
        }
    }
    None
}

fn chain_of(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or_default()
}

/// Whether `table`/`rule` exists (iptables' own semantic comparison, `-C`).
fn exists(b: Backend, f: Family, table: &str, rule: &Rule) -> bool {
    let mut args = vec!["-w", "5", "-t", table, "-C", rule.chain.as_str()];
    args.extend(rule.args.iter().map(String::as_str));
    run(&b.bin(f, ""), &args, None).is_ok()
}

/// What a successful apply changed, for a later exact removal.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// Tables that did not exist before (nft: removed again on cleanup when empty).
    pub created_tables: Vec<String>,
    /// Our rules in built-in chains (table, chain, args).
    pub builtin: Vec<(String, String, Vec<String>)>,
}

/// Whether a rule in a built-in chain (an `iptables-save` line) is one Istio's rule set
/// writes: a jump into an `ISTIO_*` chain, or one of the few non-jump shapes (interface
/// exclusions and the TPROXY mark handling). This lets a run remove what an earlier
/// run with other parameters left, without any record of it.
pub fn is_capture_rule(table: &str, line: &str) -> bool {
    let toks: Vec<&str> = line.split_whitespace().collect();
    if toks.len() < 3 || toks[0] != "-A" || !BUILTIN_CHAINS.contains(&toks[1]) {
        return false;
    }
    if jump_target(line).is_some_and(is_ours) {
        return true;
    }
    let m = &toks[2..];
    let has = |t: &str| m.contains(&t);
    if m.len() == 4 && (m[0] == "-i" || m[0] == "-o") && m[2] == "-j" && m[3] == "RETURN" {
        return table == "nat" || table == "mangle";
    }
    table == "mangle"
        && ((has("CONNMARK") && (has("--save-mark") || has("--restore-mark")))
            || (toks[1] == "OUTPUT"
                && has("lo")
                && ((has("mark") && has("RETURN")) || (has("owner") && has("MARK")))))
}

/// Builds the restore transaction that turns `current` into `desired` (or removes all
/// of ours when `desired` is `None`).
fn transaction(current: &Saved, desired: Option<&FamilyRules>) -> String {
    let mut tables: Vec<String> = current
        .iter()
        .filter(|(n, t)| {
            t.chains.iter().any(|(c, _)| is_ours(c))
                || t.rules.iter().any(|r| is_capture_rule(n, r))
        })
        .map(|(n, _)| n.clone())
        .collect();
    if let Some(d) = desired {
        tables.extend(d.tables.iter().map(|(n, _)| n.clone()));
    }
    tables.sort();
    tables.dedup();

    let mut out = String::new();
    for table in tables {
        let cur = current.get(&table).cloned().unwrap_or_default();
        let want = desired.and_then(|d| d.table(&table));
        let existing: Vec<&String> = cur
            .chains
            .iter()
            .map(|(c, _)| c)
            .filter(|c| is_ours(c))
            .collect();
        let wanted: Vec<String> = want.map(|w| w.chains.clone()).unwrap_or_default();
        let mut body = String::new();
        for c in existing
            .iter()
            .map(|c| c.as_str())
            .chain(wanted.iter().map(String::as_str))
        {
            let line = format!(":{c} - [0:0]\n");
            if !body.contains(&line) {
                body.push_str(&line);
            }
        }
        for line in &cur.rules {
            if is_capture_rule(&table, line) {
                body.push_str(&format!("-D{}\n", &line[2..]));
            }
        }
        for c in existing {
            if !wanted.contains(c) {
                body.push_str(&format!("-X {c}\n"));
            }
        }
        if let Some(w) = want {
            for r in w.all_rules() {
                body.push_str(&r.append_line());
                body.push('\n');
            }
        }
        if !body.is_empty() {
            out.push_str(&format!("*{table}\n{body}COMMIT\n"));
        }
    }
    out
}

fn restore(b: Backend, f: Family, input: &str) -> Result<(), IptablesError> {
    if input.is_empty() {
        return Ok(());
    }
    run(
        &b.bin(f, "restore"),
        &["--noflush", "-w", "10"],
        Some(input),
    )
    .map(|_| ())
}

/// The transaction for a netns without capture rules: `-N` makes it fail as a whole
/// (changing nothing) when any of our chains already exists.
fn fresh_transaction(rules: &FamilyRules) -> String {
    let mut out = String::new();
    for (table, tr) in &rules.tables {
        out.push_str(&format!("*{table}\n"));
        for c in &tr.chains {
            out.push_str(&format!("-N {c}\n"));
        }
        for r in tr.all_rules() {
            out.push_str(&r.append_line());
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Writes `rules` (replacing any earlier capture rules) in one transaction.
///
/// Fast path (a new pod's netns): one restore that creates our chains. If any of them
/// exists, that transaction fails without effect and the current rules are read to
/// build one that replaces them. Tables are recorded as created by us on the fast
/// path; removal only deletes them when nothing is left in them.
pub fn apply(b: Backend, rules: &FamilyRules) -> Result<Applied, IptablesError> {
    let f = rules.family;
    let builtin: Vec<(String, String, Vec<String>)> = rules
        .builtin_rules()
        .into_iter()
        .map(|(t, r)| (t, r.chain, r.args))
        .collect();
    match restore(b, f, &fresh_transaction(rules)) {
        Ok(()) => {
            return Ok(Applied {
                created_tables: rules.tables.iter().map(|(t, _)| t.clone()).collect(),
                builtin,
            })
        }
        Err(IptablesError::Failed { stderr, .. }) => {
            tracing::debug!(%stderr, family = f.name(), "capture rules present: replacing them");
        }
        Err(e) => return Err(e),
    }
    let current = save(b, f)?;
    restore(b, f, &transaction(&current, Some(rules)))?;
    Ok(Applied {
        created_tables: rules
            .tables
            .iter()
            .map(|(t, _)| t.clone())
            .filter(|t| !current.contains_key(t))
            .collect(),
        builtin,
    })
}

/// Removes our chains, jumps into them, and the recorded built-in rules; for nft, also
/// the tables we created when they are empty again.
pub fn remove(b: Backend, f: Family, applied: &Applied) -> Result<(), IptablesError> {
    let current = save(b, f)?;
    restore(b, f, &transaction(&current, None))?;
    if b == Backend::Nft && !applied.created_tables.is_empty() {
        let after = save(b, f)?;
        for t in &applied.created_tables {
            let empty = after.get(t).is_some_and(|s| {
                s.rules.is_empty()
                    && s.chains
                        .iter()
                        .all(|(c, p)| BUILTIN_CHAINS.contains(&c.as_str()) && p == "ACCEPT")
            });
            if empty {
                // Over netlink, not with the `nft` command: DEL must not depend on a
                // package few nodes have. A failure is reported, never ignored: an
                // empty table left behind is a different node than before ADD.
                crate::nftables::delete_table(f, t)?;
            }
        }
    }
    Ok(())
}

/// What is missing from `rules` in the current netns (empty: all present).
pub fn check(b: Backend, rules: &FamilyRules) -> Result<Vec<String>, IptablesError> {
    let f = rules.family;
    let current = save(b, f)?;
    let mut missing = Vec::new();
    for (table, tr) in &rules.tables {
        let cur = current.get(table).cloned().unwrap_or_default();
        for (chain, want) in &tr.rules {
            if BUILTIN_CHAINS.contains(&chain.as_str()) {
                for a in want {
                    let r = Rule {
                        chain: chain.clone(),
                        args: a.clone(),
                    };
                    if !exists(b, f, table, &r) {
                        missing.push(format!("{} {table}: {}", f.name(), r.append_line()));
                    }
                }
            } else {
                let have = cur.rules.iter().filter(|l| chain_of(l) == chain).count();
                if !cur.chains.iter().any(|(c, _)| c == chain) {
                    missing.push(format!("{} {table}: chain {chain}", f.name()));
                } else if have != want.len() {
                    missing.push(format!(
                        "{} {table}: chain {chain} has {have} rules, expected {}",
                        f.name(),
                        want.len()
                    ));
                }
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_replaces_and_cleans() {
        let saved = parse_save(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n:ISTIO_OLD - [0:0]\n\
             -A OUTPUT -j ISTIO_OUTPUT\n-A OUTPUT -o eth9 -j RETURN\n-A ISTIO_OUTPUT -j ISTIO_OLD\nCOMMIT\n",
        );
        let p = mesh_api::RedirectParams {
            exclude_interfaces: vec!["eth9".into()],
            ..Default::default()
        };
        let rules = crate::rules::build(&p).v4;
        let text = transaction(&saved, Some(&rules));
        assert!(text.contains(":ISTIO_OUTPUT - [0:0]\n"), "{text}");
        assert!(text.contains("-D OUTPUT -j ISTIO_OUTPUT\n"), "{text}");
        assert!(text.contains("-D OUTPUT -o eth9 -j RETURN\n"), "{text}");
        assert!(text.contains("-X ISTIO_OLD\n"), "{text}");
        assert_eq!(text.matches("-A OUTPUT -j ISTIO_OUTPUT").count(), 1);
        // Removal leaves no ISTIO chain behind.
        let text = transaction(&saved, None);
        assert!(
            text.contains("-X ISTIO_OUTPUT") && text.contains("-X ISTIO_OLD"),
            "{text}"
        );
        assert!(!text.contains("-A "), "{text}");
        assert!(text.contains("-D OUTPUT -o eth9 -j RETURN"), "{text}");
    }

    #[test]
    fn recognises_istio_shapes_only() {
        for (t, l) in [
            ("nat", "-A PREROUTING -i eth7 -j RETURN"),
            ("mangle", "-A OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"),
            ("mangle", "-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff"),
            ("mangle", "-A OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN"),
            ("raw", "-A PREROUTING -j ISTIO_INBOUND"),
        ] {
            assert!(is_capture_rule(t, l), "{l}");
        }
        for (t, l) in [
            ("nat", "-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE"),
            ("nat", "-A ISTIO_OUTPUT -o lo -j RETURN"),
            ("filter", "-A INPUT -i eth0 -j RETURN"),
            ("nat", "-A OUTPUT -j KUBE-SERVICES"),
        ] {
            assert!(!is_capture_rule(t, l), "{l}");
        }
    }
}
