//! Real mesh processes on loopback for the meshctl tests: `mesh-proxy`,
//! `mesh-agent` and `mesh-webhook` started on port 0 (each reports what it bound
//! on its first stdout line), and `meshctl` run with a chosen `KUBECONFIG` as its
//! only hint of a cluster, once or until its output matches.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_e2e::bins::workspace_bin;
use mesh_e2e::testca::{write_file, TestCa};

/// A kubeconfig path that does not exist: meshctl must not find any cluster
/// (nor whatever kubeconfig this machine has).
pub const NO_CLUSTER: &str = "/nonexistent/kubeconfig";

/// A child process, killed and reaped on drop (also when the test panics).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a binary and returns it with its first stdout line.
pub fn spawn(cmd: &mut Command) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(child), line)
}

/// The value of `key` (e.g. `admin=`) in a "bound" line.
pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_string()
}

/// `mesh-proxy` as pod `web-0.shop` on 127.0.0.1, every port 0, configured by
/// `config` (`--agent ADDR` or `--config-dir DIR`); returns it with its admin
/// address, which is loopback-only as in a pod, and its Prometheus address.
pub fn proxy(config: &[&str]) -> (Proc, String, String) {
    let (p, line) = spawn(
        Command::new(workspace_bin("mesh-proxy"))
            .args([
                "--bind",
                "127.0.0.1",
                "--pod",
                "web-0",
                "--namespace",
                "shop",
            ])
            .args(["--outbound-port", "0", "--inbound-port", "0"])
            .args(["--admin-port", "0", "--health-port", "0"])
            .args(["--prometheus-port", "0", "--status-port", "0"])
            .args(config),
    );
    let admin = field(&line, "admin=");
    assert!(admin.starts_with("127.0.0.1:"), "{admin}");
    (p, admin, field(&line, "prometheus="))
}

/// `mesh-agent` over the YAML in `dir`: (process, sync address, debug address).
pub fn agent(dir: &Path) -> (Proc, String, String) {
    let (p, line) = spawn(
        Command::new(workspace_bin("mesh-agent"))
            .args(["--config-dir", dir.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"]),
    );
    let (sync, debug) = (field(&line, "sync="), field(&line, "debug="));
    (p, sync, debug)
}

/// `mesh-webhook` serving HTTPS with a certificate for its Service name from a
/// throwaway CA.
pub struct Webhook {
    pub addr: String,
    /// The CA's certificate, to verify the webhook with.
    pub ca: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

pub fn webhook() -> Webhook {
    let ca = TestCa::new("webhook test CA", None);
    let leaf = ca.leaf("mesh-webhook", &["mesh-webhook.istio-system.svc"], false);
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "tls.crt", &leaf.cert_pem);
    write_file(dir.path(), "tls.key", &leaf.key_pem);
    write_file(dir.path(), "ca.crt", &ca.pem);
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (proc_, line) = spawn(Command::new(workspace_bin("mesh-webhook")).args([
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &p("tls.crt"),
        "--tls-key",
        &p("tls.key"),
    ]));
    // "listening on ADDR"
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    Webhook {
        addr,
        ca: dir.path().join("ca.crt"),
        _proc: proc_,
        _dir: dir,
    }
}

/// meshctl with only `kubeconfig` telling it where the cluster is (no
/// in-cluster config, and a HOME without a ~/.kube): (success, stdout, stderr).
pub fn meshctl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", "/nonexistent/home")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs meshctl until it succeeds with output that `f` accepts (a proxy needs a
/// moment to get its config pushed), for at most 15 s.
pub fn until(kubeconfig: &Path, args: &[&str], f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out, err) = meshctl(kubeconfig, args);
        if ok && f(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "meshctl {args:?} never matched; last: {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
