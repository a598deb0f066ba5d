//! A node running a real `mesh-agent` (files source, mesh CA with local per-pod
//! credentials) and meshed pods whose sidecars get certificates from it, for the
//! tests that need several pods with chosen identities: each pod declares a
//! service account in its Pod object and may hold a credential for another one
//! (an impostor), or have no sidecar at all (an external server).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use crate::common::*;
use mesh_e2e::bins::workspace_bin;

/// One pod of the mesh.
pub struct PodSpec<'a> {
    pub name: &'a str,
    /// `spec.serviceAccountName` of the Pod object (what the endpoints declare).
    pub pod_sa: &'a str,
    /// The identity its sidecar's credential proves; `None`: no sidecar, no app.
    pub token_sa: Option<&'a str>,
    pub labels: &'a [(&'a str, &'a str)],
}

pub const MESHED: (&str, &str) = ("security.istio.io/tlsMode", "istio");

/// Agent and sidecars log to stderr; run them with stderr on stdout so tests
/// can wait for their log lines (`exec` keeps the process id).
const SH: &str = "/bin/sh";
const LOGS_TO_STDOUT: &str = "exec \"$0\" \"$@\" 2>&1";

/// Writes a file atomically, world-readable (sidecars run as 1337).
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

fn pod_yaml(name: &str, ip: &str, sa: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: {v}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n{labels}spec:\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: echo\nstatus:\n  phase: Running\n  podIP: {ip}\n  conditions:\n  - type: Ready\n    status: \"True\"\n"
    )
}

/// Fields drop in order: processes, then files, then pods and the node.
pub struct MeshNet {
    /// Per pod (same order as the specs): its sidecar and echo app, if any.
    pub procs: Vec<Vec<PodProcess>>,
    pub agent: PodProcess,
    /// The agent's config folder (Istio YAML, picked up on change).
    pub config: ViewDir,
    /// Credentials and any files a test hands to sidecars (world-readable).
    pub files: ViewDir,
    pub pods: Vec<Pod>,
    _node: Node,
}

impl MeshNet {
    pub fn new(services_yaml: &str, specs: &[PodSpec<'_>], proxy_extra: &[&str]) -> MeshNet {
        let node = Node::new().unwrap();
        let pods: Vec<Pod> = specs
            .iter()
            .map(|s| node.add_pod(s.name, "default").unwrap())
            .collect();
        let config = ViewDir::new();
        let files = ViewDir::new();
        write(&config.0, "services.yaml", services_yaml);
        let yaml: Vec<String> = specs
            .iter()
            .zip(&pods)
            .map(|(s, p)| pod_yaml(s.name, &p.ip().to_string(), s.pod_sa, s.labels))
            .collect();
        write(&config.0, "pods.yaml", yaml.join("---\n"));
        let mut tokens = String::new();
        for s in specs {
            if let Some(sa) = s.token_sa {
                tokens.push_str(&format!("tok-{} default {sa}\n", s.name));
                write(
                    &files.0,
                    &format!("{}.token", s.name),
                    format!("tok-{}\n", s.name),
                );
            }
        }
        write(&files.0, "ca-tokens", tokens);
        let agent_addr = format!("{}:15012", mesh_e2e::harness::GATEWAY);
        let bin = workspace_bin("mesh-agent");
        let mut agent = node
            .spawn(&[
                SH,
                "-c",
                LOGS_TO_STDOUT,
                bin.to_str().unwrap(),
                "--config-dir",
                config.0.to_str().unwrap(),
                "--listen",
                &agent_addr,
                "--debug-listen",
                "127.0.0.1:15014",
                "--debounce-ms",
                "20",
                "--ca-tokens",
                files.0.join("ca-tokens").to_str().unwrap(),
                "--ca-root-out",
                files.0.join("root-cert.pem").to_str().unwrap(),
            ])
            .unwrap();
        agent
            .wait_for_line("mesh-agent listening", Duration::from_secs(10))
            .unwrap();
        let mut procs = Vec::new();
        for (s, pod) in specs.iter().zip(&pods) {
            let mut mine = Vec::new();
            if s.token_sa.is_some() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != MESHED.0)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                redirect(pod);
                mine.push(start_echo(pod, s.name));
                mine.push(start_sidecar(
                    pod,
                    &labels.join(","),
                    s.pod_sa,
                    &agent_addr,
                    &files.0.join(format!("{}.token", s.name)),
                    proxy_extra,
                ));
            }
            procs.push(mine);
        }
        MeshNet {
            procs,
            agent,
            config,
            files,
            pods,
            _node: node,
        }
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name() == name).unwrap()
    }

    /// The sidecar process of the pod at `index` (its echo app is `[0]`).
    pub fn sidecar(&mut self, index: usize) -> &mut PodProcess {
        &mut self.procs[index][1]
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.files.0.join(name)
    }
}

fn start_sidecar(
    pod: &Pod,
    labels: &str,
    sa: &str,
    agent: &str,
    token: &Path,
    extra: &[&str],
) -> PodProcess {
    let proxy = env!("CARGO_BIN_EXE_mesh-proxy");
    let ip = pod.ip().to_string();
    // The agent publishes its root bundle beside the tokens (--ca-root-out);
    // sidecars verify the agent's TLS port (15012) against it.
    let root = token.with_file_name("root-cert.pem");
    let mut argv = vec![
        SH,
        "-c",
        LOGS_TO_STDOUT,
        proxy,
        "--pod",
        pod.name(),
        "--namespace",
        "default",
        "--service-account",
        sa,
        "--labels",
        labels,
        "--instance-ip",
        &ip,
        "--agent",
        agent,
        "--ca-token-file",
        token.to_str().unwrap(),
        "--ca-root-file",
        root.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    let mut p = pod.spawn(PROXY, &argv).unwrap();
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(10))
        .unwrap();
    // Ready means: config applied and workload certificate installed.
    wait_ready(pod);
    p
}

/// The admin page at `path` as JSON.
pub fn admin_json(pod: &Pod, path: &str) -> serde_json::Value {
    let out = pod
        .exec(0, &["curl", "-s", &format!("http://127.0.0.1:15000{path}")])
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Runs `f` in a thread that joined `pod`'s network namespace (only that thread).
pub fn in_netns<T: Send + 'static>(
    pod: &Pod,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path: PathBuf = pod.netns_path();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// Status code of one curl from the app (UID 1000) of `pod`, with its body.
pub fn status(pod: &Pod, args: &[&str]) -> (String, String) {
    let mut argv = vec!["-w", "\n%{http_code}"];
    argv.extend_from_slice(args);
    let out = curl(pod, &argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}
