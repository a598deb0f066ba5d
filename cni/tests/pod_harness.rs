//! mesh-cni chained after bridge + host-local in the pod harness (real CNI plugins,
//! real pods as network namespaces): an injected pod's outbound TCP from the app UID is
//! redirected to 15001 (the listener sees the original destination through
//! SO_ORIGINAL_DST), inbound goes to 15006, UID 1337 and excluded ports/ranges are not
//! captured; DEL restores the ruleset exactly (nft and legacy); ADD twice does not
//! duplicate; 50 concurrent pods come and go without leftovers; an unreachable pod
//! source fails the pod's creation.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_e2e::harness::{cni, Node, Pod};
use serde_json::{json, Value};

const APP_UID: u32 = 1000;

fn pod_yaml(name: &str, annotations: &[(&str, &str)]) -> String {
    let mut a = String::from("    sidecar.istio.io/status: '{\"containers\":[\"istio-proxy\"]}'\n");
    for (k, v) in annotations {
        a.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    format!("metadata:\n  name: {name}\n  namespace: default\n  annotations:\n{a}spec:\n  containers:\n  - name: app\n  - name: istio-proxy\n")
}

/// Plugin folder with the binary, the pod folder, the state folder.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::copy(
            env!("CARGO_BIN_EXE_mesh-cni"),
            dir.path().join("bin/mesh-cni"),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("pods")).unwrap();
        let pods = [
            pod_yaml(
                "productpage-v1-0",
                &[("traffic.sidecar.istio.io/excludeOutboundPorts", "5432")],
            ),
            pod_yaml(
                "details-v1-0",
                &[(
                    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                    "10.88.0.0/16",
                )],
            ),
        ];
        for (i, p) in pods.iter().enumerate() {
            std::fs::write(dir.path().join(format!("pods/{i}.yaml")), p).unwrap();
        }
        for name in ["ratings-v1-0", "plain-0"] {
            let plain = format!("metadata: {{name: {name}, namespace: default}}\nspec: {{containers: [{{name: app}}]}}\n");
            std::fs::write(dir.path().join(format!("pods/{name}.yaml")), plain).unwrap();
        }
        for i in 0..50 {
            std::fs::write(
                dir.path().join(format!("pods/c{i}.yaml")),
                pod_yaml(&format!("conc-{i}"), &[]),
            )
            .unwrap();
        }
        Setup { dir }
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn plugin(&self, backend: &str) -> Value {
        json!({
            "type": "mesh-cni",
            "podDir": self.dir.path().join("pods"),
            "stateDir": self.dir.path().join("state"),
            "iptablesBackend": backend,
        })
    }

    fn node(&self, backend: &str) -> Node {
        Node::builder()
            .plugin_dir(self.bin_dir())
            .chain_plugin(self.plugin(backend))
            .build()
            .unwrap()
    }

    fn records(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("state"))
            .map(|rd| {
                rd.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "json")
                })
                .count()
            })
            .unwrap_or(0)
    }
}

/// A TCP listener inside a pod's netns that answers each connection with
/// `<tag> <original destination>` and records what it saw; stops on drop.
struct Listener {
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn start(netns: &Path, port: u16, tag: &'static str) -> Listener {
        let l = mesh_cni::netns::run_in(netns, move || TcpListener::bind(("0.0.0.0", port)))
            .unwrap()
            .unwrap();
        l.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                let orig = mesh_cni::validate::original_dst(&s)
                    .map(|d| d.to_string())
                    .unwrap_or_else(|_| "-".into());
                seen2.lock().unwrap().push(orig.clone());
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let body = format!("{tag} {orig}");
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Listener { seen, stop }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn curl(pod: &Pod, uid: u32, url: &str) -> String {
    let out = pod
        .exec(uid, &["curl", "-sS", "--max-time", "5", url])
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url} as {uid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn injected_pod_traffic_is_captured() {
    let setup = Setup::new();
    let node = setup.node("nft");
    let server = node.add_pod("ratings-v1-0", "default").unwrap(); // not injected
    let app = node.add_pod("productpage-v1-0", "default").unwrap();
    let excluded_range = node.add_pod("details-v1-0", "default").unwrap();
    let save = app.exec(0, &["iptables-nft-save"]).unwrap();
    let save = String::from_utf8_lossy(&save.stdout);
    assert!(save.contains("-A OUTPUT -j ISTIO_OUTPUT"), "{save}");
    assert!(
        !String::from_utf8_lossy(&server.exec(0, &["iptables-nft-save"]).unwrap().stdout)
            .contains("ISTIO")
    );

    let s9080 = Listener::start(&server.netns_path(), 9080, "server");
    let s5432 = Listener::start(&server.netns_path(), 5432, "db");
    let proxy_out = Listener::start(&app.netns_path(), 15001, "outbound-proxy");
    let proxy_in = Listener::start(&app.netns_path(), 15006, "inbound-proxy");
    let (sip, aip) = (server.ip(), app.ip());

    // App UID -> other pod: redirected to 15001, original destination preserved.
    let r = curl(&app, APP_UID, &format!("http://{sip}:9080/"));
    assert_eq!(r, format!("outbound-proxy {sip}:9080"));
    assert_eq!(proxy_out.seen(), [format!("{sip}:9080")]);
    assert!(s9080.seen().is_empty());

    // The proxy's own UID goes straight out.
    let r = curl(&app, 1337, &format!("http://{sip}:9080/"));
    assert!(r.starts_with("server "), "{r}");
    // An excluded port goes straight out.
    let r = curl(&app, APP_UID, &format!("http://{sip}:5432/"));
    assert!(r.starts_with("db "), "{r}");
    assert_eq!(s5432.seen(), ["-"]);
    // A pod whose excluded range covers the destination is not captured either.
    let r = curl(&excluded_range, APP_UID, &format!("http://{sip}:9080/"));
    assert!(r.starts_with("server "), "{r}");
    assert_eq!(proxy_out.seen().len(), 1);

    // Inbound to the injected pod lands on 15006 with its original destination.
    let r = curl(&server, APP_UID, &format!("http://{aip}:8080/"));
    assert_eq!(r, format!("inbound-proxy {aip}:8080"));
    assert_eq!(proxy_in.seen(), [format!("{aip}:8080")]);
    // The inbound exclusions (15020 status port) are honoured: nothing listens there.
    let out = server
        .exec(
            APP_UID,
            &[
                "curl",
                "-sS",
                "--max-time",
                "3",
                &format!("http://{aip}:15020/"),
            ],
        )
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(proxy_in.seen().len(), 1);
}

fn plugin_call(
    setup: &Setup,
    node: &Node,
    pod: &Pod,
    backend: &str,
    command: &str,
) -> Result<Value, Box<cni::CniError>> {
    let inv = cni::Invocation {
        plugin: setup.bin_dir().join("mesh-cni"),
        command: command.into(),
        container_id: pod.container_id().into(),
        netns: pod.netns_path(),
        ifname: "eth0".into(),
        args: format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}",
            pod.name()
        ),
        path: vec![setup.bin_dir(), cni::system_plugin_dir().to_path_buf()],
        run_in_netns: Some(node.netns().to_string()),
    };
    let conf = cni::plugin_config(
        "test-net",
        "1.0.0",
        &setup.plugin(backend),
        Some(pod.cni_result()),
    );
    cni::invoke(&inv, &conf).map_err(Box::new)
}

fn saves(pod: &Pod, backend: &str) -> String {
    let mut all = String::new();
    for bin in [
        format!("iptables-{backend}-save"),
        format!("ip6tables-{backend}-save"),
    ] {
        let out = pod.exec(0, &[&bin]).unwrap();
        let mut text = String::new();
        for l in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            let l = if l.starts_with(':') {
                l.rsplit_once(' ').map(|(a, _)| a).unwrap_or(l)
            } else {
                l
            };
            text.push_str(l);
            text.push('\n');
        }
        // Legacy lists tables in the order they were first used: compare as a set.
        let mut tables: Vec<&str> = text.split_inclusive("COMMIT\n").collect();
        tables.sort();
        all.push_str(&tables.concat());
    }
    all
}

fn del_restores_exactly(backend: &str) {
    let setup = Setup::new();
    let node = setup.node(backend);
    let plain = node.add_pod("plain-0", "default").unwrap();
    let app = node.add_pod("productpage-v1-0", "default").unwrap();
    if backend == "legacy" {
        // Legacy tables stay once used in a netns; compare with them instantiated.
        for pod in [&plain, &app] {
            for t in ["mangle", "nat", "raw"] {
                pod.exec(0, &["iptables-legacy", "-t", t, "-S"]).unwrap();
                pod.exec(0, &["ip6tables-legacy", "-t", t, "-S"]).unwrap();
            }
        }
    }
    let baseline = saves(&plain, backend);
    let captured = saves(&app, backend);
    assert!(captured.contains("ISTIO_OUTPUT"), "{captured}");
    // ADD twice: the same rules, no duplicates; the result passes through.
    let again = plugin_call(&setup, &node, &app, backend, "ADD").unwrap();
    assert_eq!(&again, app.cni_result());
    assert_eq!(saves(&app, backend), captured);
    plugin_call(&setup, &node, &app, backend, "CHECK").unwrap();
    plugin_call(&setup, &node, &app, backend, "DEL").unwrap();
    assert_eq!(
        saves(&app, backend),
        baseline,
        "DEL did not restore the ruleset"
    );
    plugin_call(&setup, &node, &app, backend, "DEL").unwrap();
    assert_eq!(setup.records(), 0);
    node.remove_pod(app).unwrap();
}

#[test]
fn del_restores_exactly_nft() {
    del_restores_exactly("nft");
}

#[test]
fn del_restores_exactly_legacy() {
    del_restores_exactly("legacy");
}

#[test]
fn fifty_concurrent_pods_leave_nothing_behind() {
    let setup = Setup::new();
    let node = setup.node("nft");
    std::thread::scope(|s| {
        for i in 0..50 {
            let node = node.clone();
            s.spawn(move || {
                let pod = node.add_pod(&format!("conc-{i}"), "default").unwrap();
                let save = pod.exec(0, &["iptables-nft-save", "-t", "nat"]).unwrap();
                assert!(String::from_utf8_lossy(&save.stdout).contains("ISTIO_OUTPUT"));
                node.remove_pod(pod).unwrap();
            });
        }
    });
    assert_eq!(setup.records(), 0);
    let left: Vec<String> = mesh_e2e::harness::netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-p", node.id())))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn unreachable_pod_source_fails_pod_creation() {
    let setup = Setup::new();
    let kc = setup.dir.path().join("kubeconfig");
    std::fs::write(&kc, "clusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:9'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n").unwrap();
    let node = Node::builder()
        .plugin_dir(setup.bin_dir())
        .chain_plugin(json!({
            "type": "mesh-cni",
            "kubernetes": {"kubeconfig": kc, "retries": 1, "retryDelayMs": 10, "timeoutMs": 300},
            "stateDir": setup.dir.path().join("state"),
        }))
        .build()
        .unwrap();
    let err = match node.add_pod("productpage-v1-0", "default") {
        Ok(_) => panic!("pod started without its capture rules"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("mesh-cni") && err.contains("productpage-v1-0"),
        "{err}"
    );
    assert_eq!(setup.records(), 0);
}
