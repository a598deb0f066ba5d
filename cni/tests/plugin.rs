//! The CNI plugin through the real binary and the CNI protocol (env + stdin), against
//! real network namespaces and real iptables (both backends): ADD/DEL/CHECK/STATUS/GC/
//! VERSION, fail-closed behaviour, the Kubernetes pod source against an in-process fake
//! API server, bad stdin, and concurrent ADD/DEL.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{bin, Netns};
use mesh_e2e::fake_api::Fake;
use serde_json::{json, Value};

const INJECTED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  namespace: default
  annotations:
    sidecar.istio.io/status: '{"containers":["istio-proxy"]}'
    traffic.sidecar.istio.io/excludeOutboundPorts: "5432"
spec:
  containers:
  - name: reviews
  - name: istio-proxy
"#;

const PLAIN_POD: &str = r#"
metadata: {name: plain, namespace: default}
spec: {containers: [{name: app}]}
"#;

struct Fixture {
    pods: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let pods = tempfile::tempdir().unwrap();
        std::fs::write(pods.path().join("reviews.yaml"), INJECTED_POD).unwrap();
        std::fs::write(pods.path().join("plain.yaml"), PLAIN_POD).unwrap();
        std::fs::write(pods.path().join("junk.yaml"), "{not: [valid").unwrap();
        Fixture {
            pods,
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn conf(&self, backend: &str, netns: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "mesh-cni",
            "podDir": self.pods.path(),
            "stateDir": self.state.path(),
            "iptablesBackend": backend,
            "logFile": self.state.path().join("mesh-cni.log"),
            "prevResult": prev_result(netns),
        })
    }
}

fn prev_result(netns: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": netns}],
        "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 0}],
        "dns": {}
    })
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }
}

fn cni(command: &str, container: &str, netns: &str, pod: &str, stdin: &[u8]) -> Out {
    let mut child = Command::new(bin())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
        )
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn call(command: &str, ns: &Netns, pod: &str, conf: &Value) -> Out {
    cni(
        command,
        &ns.name,
        &ns.path(),
        pod,
        conf.to_string().as_bytes(),
    )
}

/// Legacy tables cannot be removed from a netns once used, so the baseline for
/// legacy is taken with them instantiated; nft starts (and must end) empty.
fn baseline(ns: &Netns, backend: &str) -> (String, String) {
    if backend == "legacy" {
        for t in ["mangle", "nat", "raw"] {
            ns.exec_ok(&["iptables-legacy", "-t", t, "-S"]);
            ns.exec_ok(&["ip6tables-legacy", "-t", t, "-S"]);
        }
    }
    (ns.save(backend, false), ns.save(backend, true))
}

fn add_del_restores_exactly(backend: &str) {
    let fx = Fixture::new();
    let ns = Netns::new(&format!("adddel-{backend}"));
    let before = baseline(&ns, backend);
    let conf = fx.conf(backend, &ns.path());

    let add = call("ADD", &ns, "reviews-v1", &conf);
    assert_eq!(add.code, 0, "{}", add.stderr);
    // prevResult passes through unchanged; logs go to the configured file only.
    assert_eq!(add.stdout.trim(), prev_result(&ns.path()).to_string());
    let log = std::fs::read_to_string(fx.state.path().join("mesh-cni.log")).unwrap();
    assert!(
        log.contains("capture rules written") && log.contains("default/reviews-v1"),
        "{log}"
    );
    let v4 = ns.save(backend, false);
    assert!(v4.contains("-A OUTPUT -j ISTIO_OUTPUT"), "{v4}");
    assert!(v4.contains("--dport 5432 -j RETURN"), "{v4}");
    assert!(
        v4.contains("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"),
        "{v4}"
    );
    assert_eq!(
        ns.save(backend, true),
        before.1,
        "IPv4-only pod got IPv6 rules"
    );

    // ADD twice: replaced, no duplicates.
    assert_eq!(call("ADD", &ns, "reviews-v1", &conf).code, 0);
    assert_eq!(ns.save(backend, false), v4);

    let check = call("CHECK", &ns, "reviews-v1", &conf);
    assert_eq!(check.code, 0, "{}", check.stdout);
    // Someone removes a jump: CHECK says what is missing.
    let bin_ipt = format!("iptables-{backend}");
    ns.exec_ok(&[&bin_ipt, "-t", "nat", "-D", "OUTPUT", "-j", "ISTIO_OUTPUT"]);
    let check = call("CHECK", &ns, "reviews-v1", &conf);
    assert_ne!(check.code, 0);
    assert_eq!(check.json()["code"], 101);
    assert!(
        check.json()["details"]
            .as_str()
            .unwrap()
            .contains("ISTIO_OUTPUT"),
        "{}",
        check.stdout
    );

    let del = call("DEL", &ns, "reviews-v1", &conf);
    assert_eq!(del.code, 0, "{}", del.stderr);
    assert!(del.stdout.is_empty());
    assert_eq!(
        (ns.save(backend, false), ns.save(backend, true)),
        before,
        "DEL did not restore the ruleset"
    );
    // DEL twice is fine.
    assert_eq!(call("DEL", &ns, "reviews-v1", &conf).code, 0);
}

#[test]
fn add_del_restores_exactly_nft() {
    add_del_restores_exactly("nft");
}

#[test]
fn add_del_restores_exactly_legacy() {
    add_del_restores_exactly("legacy");
}

#[test]
fn dual_stack_pod_gets_ipv6_rules_and_del_removes_them() {
    let fx = Fixture::new();
    let ns = Netns::new("v6");
    let before = baseline(&ns, "nft");
    let mut conf = fx.conf("nft", &ns.path());
    conf["prevResult"]["ips"]
        .as_array_mut()
        .unwrap()
        .push(json!({"address": "fd00::5/64", "interface": 0}));
    assert_eq!(call("ADD", &ns, "reviews-v1", &conf).code, 0);
    assert!(ns.save("nft", true).contains("-A OUTPUT -j ISTIO_OUTPUT"));
    assert_eq!(call("DEL", &ns, "reviews-v1", &conf).code, 0);
    assert_eq!((ns.save("nft", false), ns.save("nft", true)), before);
}

#[test]
fn skipped_pods_pass_through_untouched() {
    let fx = Fixture::new();
    let ns = Netns::new("skip");
    let before = baseline(&ns, "nft");
    let conf = fx.conf("nft", &ns.path());
    let out = call("ADD", &ns, "plain", &conf);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), prev_result(&ns.path()).to_string());
    assert_eq!(ns.save("nft", false), before.0);
    // Excluded namespace: the pod is not even looked up.
    let mut conf = conf;
    conf["excludeNamespaces"] = json!(["default"]);
    assert_eq!(call("ADD", &ns, "does-not-exist", &conf).code, 0);
    assert_eq!(ns.save("nft", false), before.0);
    assert_eq!(
        std::fs::read_dir(fx.state.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count(),
        0
    );
}

/// The ingress gateway pod exactly as mesh-webhook's gateway template injects it
/// (its golden file, refreshed by the webhook's own test), named for this fixture.
fn injected_gateway_pod() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../webhook/tests/golden/gateway-injected.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut pod: Value = serde_yaml_ng::from_str(&text).unwrap();
    pod["metadata"]["name"] = json!("istio-ingressgateway-5d8f7c-x1");
    pod["metadata"]["namespace"] = json!("default");
    serde_yaml_ng::to_string(&pod).unwrap()
}

#[test]
fn injected_gateway_pods_are_never_captured() {
    let fx = Fixture::new();
    std::fs::write(fx.pods.path().join("gw.yaml"), injected_gateway_pod()).unwrap();
    let ns = Netns::new("gw");
    let before = baseline(&ns, "nft");
    let conf = fx.conf("nft", &ns.path());
    let out = call("ADD", &ns, "istio-ingressgateway-5d8f7c-x1", &conf);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), prev_result(&ns.path()).to_string());
    assert_eq!(ns.save("nft", false), before.0, "no rules for a gateway");
    let log = std::fs::read_to_string(fx.state.path().join("mesh-cni.log")).unwrap();
    assert!(log.contains("istio-proxy runs as router"), "{log}");
    // The sidecar pod next to it in the same folder still is captured.
    let ns2 = Netns::new("gwside");
    let conf2 = fx.conf("nft", &ns2.path());
    let out = call("ADD", &ns2, "reviews-v1", &conf2);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(ns2.save("nft", false).contains("ISTIO_REDIRECT"));
    assert_eq!(call("DEL", &ns2, "reviews-v1", &conf2).code, 0);
}

#[test]
fn missing_pod_fails_closed() {
    let fx = Fixture::new();
    let ns = Netns::new("missing");
    let before = baseline(&ns, "nft");
    let out = call("ADD", &ns, "no-such-pod", &fx.conf("nft", &ns.path()));
    assert_ne!(out.code, 0);
    let e = out.json();
    assert_eq!(e["code"], 11);
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("default/no-such-pod"),
        "{e}"
    );
    assert_eq!(ns.save("nft", false), before.0);
}

#[test]
fn del_without_add_and_with_vanished_netns_succeed() {
    let fx = Fixture::new();
    let conf = fx.conf("nft", "/var/run/netns/none");
    let out = cni(
        "DEL",
        "never-added",
        "/var/run/netns/none",
        "reviews-v1",
        conf.to_string().as_bytes(),
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    // ADD, then the netns disappears before DEL.
    let ns = Netns::new("vanish");
    let path = ns.path();
    let conf = fx.conf("nft", &path);
    assert_eq!(call("ADD", &ns, "reviews-v1", &conf).code, 0);
    let id = ns.name.clone();
    drop(ns);
    let out = cni("DEL", &id, &path, "reviews-v1", conf.to_string().as_bytes());
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    let out = cni("DEL", &id, "", "reviews-v1", conf.to_string().as_bytes());
    assert_eq!(out.code, 0);
}

#[test]
fn bad_stdin_gets_the_right_error_codes() {
    let ns = Netns::new("badin");
    let p = ns.path();
    for (stdin, code) in [
        ("this is not json".to_string(), 6),
        (json!({"name": "x", "type": "mesh-cni"}).to_string(), 7),
        (json!({"cniVersion": "9.9.9", "name": "x"}).to_string(), 1),
        (json!({"cniVersion": "1.0.0", "name": "x", "podDir": "/nonexistent"}).to_string(), 7),
        (json!({"cniVersion": "1.0.0", "name": "x", "excludeNamespaces": "notalist", "prevResult": {}}).to_string(), 7),
    ] {
        let out = cni("ADD", &ns.name, &p, "reviews-v1", stdin.as_bytes());
        assert_ne!(out.code, 0, "{stdin}");
        let e = out.json();
        assert_eq!(e["code"], code, "{stdin}: {e}");
        assert!(!e["msg"].as_str().unwrap().is_empty());
    }
    // Missing CNI_NETNS on ADD: code 4, naming the variable.
    let conf = json!({"cniVersion": "1.0.0", "name": "x", "prevResult": {}}).to_string();
    let out = cni("ADD", "c1", "", "reviews-v1", conf.as_bytes());
    assert_eq!(out.json()["code"], 4);
    assert!(out.json()["details"]
        .as_str()
        .unwrap()
        .contains("CNI_NETNS"));
    let out = cni("BOGUS", "c1", &p, "reviews-v1", conf.as_bytes());
    assert_eq!(out.json()["code"], 4);
}

#[test]
fn version_and_status() {
    let out = cni("VERSION", "", "", "", br#"{"cniVersion":"0.4.0"}"#);
    assert_eq!(out.code, 0);
    let v = out.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(versions, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);

    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let conf = json!({"cniVersion": "1.1.0", "name": "x", "readyFile": ready}).to_string();
    let out = cni("STATUS", "", "", "", conf.as_bytes());
    assert_eq!(out.code, 1);
    assert_eq!(out.json()["code"], 50);
    std::fs::write(&ready, "").unwrap();
    assert_eq!(cni("STATUS", "", "", "", conf.as_bytes()).code, 0);
}

#[test]
fn gc_removes_leftovers_only() {
    let fx = Fixture::new();
    let (keep, gone) = (Netns::new("gckeep"), Netns::new("gcgone"));
    let before = baseline(&gone, "nft");
    for ns in [&keep, &gone] {
        assert_eq!(
            call("ADD", ns, "reviews-v1", &fx.conf("nft", &ns.path())).code,
            0
        );
    }
    let mut conf = fx.conf("nft", "");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": keep.name, "ifname": "eth0"}]);
    let out = cni("GC", "", "", "", conf.to_string().as_bytes());
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(gone.save("nft", false), before.0);
    assert!(keep.save("nft", false).contains("ISTIO_OUTPUT"));
    assert!(fx
        .state
        .path()
        .join(format!("{}_eth0.json", keep.name))
        .exists());
    assert!(!fx
        .state
        .path()
        .join(format!("{}_eth0.json", gone.name))
        .exists());
}

#[test]
fn fifty_concurrent_add_del_pairs_leave_nothing() {
    let fx = Fixture::new();
    let nss: Vec<Netns> = (0..50).map(|_| Netns::new("conc")).collect();
    std::thread::scope(|s| {
        for ns in &nss {
            let conf = fx.conf("nft", &ns.path());
            s.spawn(move || {
                let add = call("ADD", ns, "reviews-v1", &conf);
                assert_eq!(add.code, 0, "{}", add.stdout);
                let del = call("DEL", ns, "reviews-v1", &conf);
                assert_eq!(del.code, 0, "{}", del.stdout);
            });
        }
    });
    for ns in &nss {
        assert_eq!(ns.save("nft", false), "", "{} kept rules", ns.name);
    }
    assert_eq!(common::state_records(fx.state.path()), 0);
}

fn kubeconfig(dir: &Path, server: &str, token: &str) -> std::path::PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn kubernetes_pod_source_and_unreachable_api_fail_closed() {
    let pod: Value = serde_yaml_ng::from_str(INJECTED_POD).unwrap();
    let fake = Fake::new();
    fake.require_token("s3cret");
    fake.apply(pod);
    let api = fake.spawn();
    let server = format!("http://{}", api.addr);
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &server, "s3cret");
    let ns = Netns::new("k8s");
    let before = baseline(&ns, "nft");
    let conf = |kc: &Path| {
        json!({
            "cniVersion": "1.1.0", "name": "n", "type": "mesh-cni",
            "kubernetes": {"kubeconfig": kc, "retries": 2, "retryDelayMs": 10, "timeoutMs": 500},
            "stateDir": dir.path().join("state"), "iptablesBackend": "nft",
            "prevResult": prev_result(&ns.path()),
        })
    };
    let out = call("ADD", &ns, "reviews-v1", &conf(&kc));
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    assert!(ns.save("nft", false).contains("ISTIO_OUTPUT"));
    assert_eq!(call("DEL", &ns, "reviews-v1", &conf(&kc)).code, 0);
    assert_eq!(ns.save("nft", false), before.0);

    // Pod missing from the API: fail closed.
    let out = call("ADD", &ns, "other", &conf(&kc));
    assert_eq!(out.json()["code"], 11, "{}", out.stdout);
    // Wrong token: the API's 401 is reported.
    let bad = kubeconfig(&dir.path().join(".."), &server, "wrong");
    let out = call("ADD", &ns, "reviews-v1", &conf(&bad));
    assert_eq!(out.json()["code"], 11);
    assert!(
        out.json()["details"].as_str().unwrap().contains("401"),
        "{}",
        out.stdout
    );
    let seen = api.seen();
    assert!(
        seen.contains(&"GET /api/v1/namespaces/default/pods/reviews-v1".to_string()),
        "{seen:?}"
    );
    drop(api);

    // API server gone: bounded retries, then a CNI error and no rules.
    let t = std::time::Instant::now();
    let out = call("ADD", &ns, "reviews-v1", &conf(&kc));
    assert_ne!(out.code, 0);
    let e = out.json();
    assert_eq!(e["code"], 11);
    assert!(e["details"].as_str().unwrap().contains("3 attempts"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(ns.save("nft", false), before.0);
}
