//! The node installer against temp folders with conflists as real CNIs write them:
//! inserted once as the last plugin, every other byte kept, re-inserted after being
//! clobbered, `.conf` converted, invalid files skipped, late files picked up, token
//! rotation, `/readyz`, and exact removal on stop (also through SIGTERM on the binary).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_cni::install::{InstallConfig, Installer};
use mesh_e2e::wait::eventually_blocking;

const BRIDGE: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "containerd-net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "promiscMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.88.0.0/16"}], [{"subnet": "2001:4860:4860::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
      }
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    }
  ]
}
"#;

const CALICO: &str = "{\n  \"name\": \"k8s-pod-network\",\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [\n    {\n      \"type\": \"calico\",\n      \"log_level\": \"info\",\n      \"log_file_path\": \"/var/log/calico/cni/cni.log\",\n      \"datastore_type\": \"kubernetes\",\n      \"nodename\": \"node-1\",\n      \"mtu\": 0,\n      \"ipam\": {\"type\": \"calico-ipam\"},\n      \"policy\": {\"type\": \"k8s\"},\n      \"kubernetes\": {\"kubeconfig\": \"/etc/cni/net.d/calico-kubeconfig\"}\n    },\n    {\"type\": \"portmap\", \"snat\": true, \"capabilities\": {\"portMappings\": true}},\n    {\"type\": \"bandwidth\", \"capabilities\": {\"bandwidth\": true}}\n  ]\n}";

const CILIUM: &str = "{\n  \"cniVersion\": \"0.3.1\",\n  \"name\": \"cilium\",\n  \"plugins\": [\n    {\n       \"type\": \"cilium-cni\",\n       \"enable-debug\": false,\n       \"log-file\": \"/var/run/cilium/cilium-cni.log\"\n    }\n  ]\n}\n";

const FLANNEL_CONF: &str = "{\n  \"name\": \"cbr0\",\n  \"cniVersion\": \"0.3.1\",\n  \"type\": \"flannel\",\n  \"delegate\": {\"hairpinMode\": true, \"isDefaultGateway\": true}\n}\n";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        for d in ["bin", "net.d", "sa"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("sa/token"), "token-1\n").unwrap();
        std::fs::write(
            dir.path().join("sa/ca.crt"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("mesh-cni-src"), b"\x7fELF fake binary").unwrap();
        Env { dir }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn cfg(&self) -> InstallConfig {
        InstallConfig {
            cni_bin_dir: self.p("bin"),
            cni_conf_dir: self.p("net.d"),
            source_binary: self.p("mesh-cni-src"),
            token_file: self.p("sa/token"),
            ca_file: self.p("sa/ca.crt"),
            api_server: "https://10.96.0.1:443".into(),
            kubeconfig_name: "mesh-cni-kubeconfig".into(),
            kubeconfig_host_path: self.p("net.d/mesh-cni-kubeconfig"),
            ready_file: self.p("run/ready"),
            ready_file_host_path: self.p("run/ready"),
            plugin_extra: serde_json::from_str(
                r#"{"excludeNamespaces":["kube-system","istio-system"]}"#,
            )
            .unwrap(),
            poll: Duration::from_millis(50),
        }
    }
}

/// Runs the installer on a thread; stops and uninstalls on drop.
struct Running {
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(cfg: InstallConfig) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let inst = Installer::new(cfg, ready.clone());
        let passes = inst.passes();
        let s = stop.clone();
        let handle = std::thread::spawn(move || inst.run(&s));
        Running {
            stop,
            ready,
            passes,
            handle: Some(handle),
        }
    }
    /// Returns once the installer has finished `n` more full passes.
    fn wait_passes(&self, n: u64) {
        // The pass under way may have read the files before the caller changed
        // them: one more than asked for.
        let target = self.passes.load(Ordering::SeqCst) + n + 1;
        eventually_blocking("installer passes", Duration::from_secs(10), || {
            self.passes.load(Ordering::SeqCst) >= target
        });
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn plugins(p: &Path) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&read(p)).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["type"].as_str().unwrap().to_string())
        .collect()
}

fn roundtrip(name: &str, original: &str, expect: &[&str]) {
    let env = Env::new();
    std::fs::write(env.p("net.d/99-invalid.conflist"), "{ this is not json").unwrap();
    let file = env.p(&format!("net.d/{name}"));
    std::fs::write(&file, original).unwrap();
    let run = Running::start(env.cfg());
    eventually_blocking("insert", Duration::from_secs(5), || {
        read(&file).contains("mesh-cni")
    });
    assert_eq!(plugins(&file), expect);
    // Everything before our entry is the original, byte for byte.
    assert_eq!(mesh_cni::install::conflist::remove(&read(&file)), original);
    eventually_blocking("ready", Duration::from_secs(10), || {
        run.ready.load(Ordering::SeqCst)
    });
    assert!(env.p("run/ready").exists());
    assert_eq!(
        std::fs::read(env.p("bin/mesh-cni")).unwrap(),
        b"\x7fELF fake binary"
    );
    // Several passes later: still exactly one entry.
    run.wait_passes(3);
    assert_eq!(read(&file).matches("\"mesh-cni\"").count(), 1);

    // Another CNI rewrites its file: we are back within a few poll intervals
    // (generous, for loaded CI machines; the time it took is printed).
    std::fs::write(&file, original).unwrap();
    let t = Instant::now();
    eventually_blocking("re-insert", Duration::from_secs(10), || {
        read(&file).contains("mesh-cni")
    });
    eprintln!("{name}: re-inserted after {:?}", t.elapsed());
    assert_eq!(read(&file).matches("\"mesh-cni\"").count(), 1);

    run.stop();
    assert_eq!(read(&file), original, "stop did not restore {name}");
    assert_eq!(
        read(&env.p("net.d/99-invalid.conflist")),
        "{ this is not json"
    );
    assert!(!env.p("bin/mesh-cni").exists() && !env.p("net.d/mesh-cni-kubeconfig").exists());
    assert!(!env.p("run/ready").exists());
}

#[test]
fn bridge_conflist() {
    roundtrip(
        "10-containerd-net.conflist",
        BRIDGE,
        &["bridge", "portmap", "mesh-cni"],
    );
}

#[test]
fn calico_conflist() {
    roundtrip(
        "10-calico.conflist",
        CALICO,
        &["calico", "portmap", "bandwidth", "mesh-cni"],
    );
}

#[test]
fn cilium_conflist() {
    roundtrip("05-cilium.conflist", CILIUM, &["cilium-cni", "mesh-cni"]);
}

#[test]
fn conf_is_converted_and_restored() {
    let env = Env::new();
    let conf = env.p("net.d/10-flannel.conf");
    std::fs::write(&conf, FLANNEL_CONF).unwrap();
    let run = Running::start(env.cfg());
    let list = env.p("net.d/10-flannel.conflist");
    eventually_blocking("conversion", Duration::from_secs(5), || list.exists());
    assert!(!conf.exists());
    assert_eq!(plugins(&list), ["flannel", "mesh-cni"]);
    let v: serde_json::Value = serde_json::from_str(&read(&list)).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["cniVersion"].as_str()),
        (Some("cbr0"), Some("0.3.1"))
    );
    assert_eq!(v["plugins"][1]["excludeNamespaces"][1], "istio-system");
    run.stop();
    assert_eq!(read(&conf), FLANNEL_CONF);
    assert!(!list.exists());
}

#[test]
fn late_file_token_rotation_and_readyz() {
    let env = Env::new();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let run = Running::start(env.cfg());
    mesh_cni::install::serve_readyz(l, run.ready.clone());
    let readyz = || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    let kc = env.p("net.d/mesh-cni-kubeconfig");
    eventually_blocking("kubeconfig", Duration::from_secs(5), || {
        read(&kc).contains("token: token-1")
    });
    assert!(read(&kc).contains("server: https://10.96.0.1:443"));
    // No CNI config yet: not ready, after passes that saw no config.
    run.wait_passes(2);
    assert!(readyz().starts_with("HTTP/1.1 503"));
    // The node's CNI writes its config late.
    let file = env.p("net.d/10-containerd-net.conflist");
    std::fs::write(&file, BRIDGE).unwrap();
    eventually_blocking("insert", Duration::from_secs(10), || {
        read(&file).contains("mesh-cni")
    });
    eventually_blocking("ready", Duration::from_secs(10), || {
        readyz().starts_with("HTTP/1.1 200")
    });
    // The kubeconfig the plugin gets parses, and follows a token rotation.
    let parsed = mesh_cni::k8s::Kubeconfig::load(&kc).unwrap();
    assert_eq!(parsed.token.as_deref(), Some("token-1"));
    std::fs::write(env.p("sa/token"), "token-2\n").unwrap();
    eventually_blocking("rotation", Duration::from_secs(10), || {
        read(&kc).contains("token: token-2")
    });
    run.stop();
    assert_eq!(read(&file), BRIDGE);
}

/// Runs the plugin's STATUS with `entry` as its config; the exit code, or the CNI
/// error code on failure.
fn plugin_status(entry: &serde_json::Value) -> Option<u64> {
    let mut conf = entry.clone();
    conf["cniVersion"] = "1.1.0".into();
    conf["name"] = "containerd-net".into();
    let mut child = std::process::Command::new(common::bin())
        .env("CNI_COMMAND", "STATUS")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        return Some(0);
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?["code"].as_u64()
}

#[test]
fn binary_installs_and_uninstalls_on_sigterm() {
    let env = Env::new();
    let file = env.p("net.d/10-containerd-net.conflist");
    std::fs::write(&file, BRIDGE).unwrap();
    let c = env.cfg();
    let mut child = std::process::Command::new(common::bin())
        .args(["install", "--readyz-addr", "127.0.0.1:0", "--poll-ms", "50"])
        .arg("--cni-bin-dir")
        .arg(&c.cni_bin_dir)
        .arg("--cni-conf-dir")
        .arg(&c.cni_conf_dir)
        .arg("--token-file")
        .arg(&c.token_file)
        .arg("--ca-file")
        .arg(&c.ca_file)
        .arg("--ready-file")
        .arg(&c.ready_file)
        .arg("--ready-file-host-path")
        .arg(&c.ready_file)
        .arg("--api-server")
        .arg("https://10.96.0.1:443")
        .env_remove("CNI_COMMAND")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("readyz listening on 127.0.0.1:"), "{line}");
    eventually_blocking("insert", Duration::from_secs(5), || {
        read(&file).contains("mesh-cni")
    });
    // The plugin, configured by the inserted entry, reports ready through STATUS.
    let v: serde_json::Value = serde_json::from_str(&read(&file)).unwrap();
    let entry = v["plugins"][2].clone();
    eventually_blocking("STATUS ready", Duration::from_secs(5), || {
        plugin_status(&entry) == Some(0)
    });
    let installed = std::fs::read(env.p("bin/mesh-cni")).unwrap();
    assert_eq!(installed, std::fs::read(common::bin()).unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        plugin_status(&entry),
        Some(50),
        "STATUS ready after uninstall"
    );
    assert_eq!(read(&file), BRIDGE);
    assert!(!env.p("bin/mesh-cni").exists());
}
