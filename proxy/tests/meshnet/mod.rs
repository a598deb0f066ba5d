//! A node running a real `mesh-agent` (files source, mesh CA with local per-pod
//! credentials) and meshed pods whose sidecars get certificates from it, for the
//! tests that need several pods with chosen identities: each pod declares a
//! service account in its Pod object and may hold a credential for another one
//! (an impostor), or have no sidecar at all (an external server). The agent
//! serves a sidecar only the views of its credential's own pods, so an
//! impostor's sidecar follows the view of a pod `<name>-stolen` of the
//! credential's account (a Pod object with no IP, in no service), as a thief
//! of that credential could.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::*;

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

/// A meshed client pod, identity `client`.
pub const CLIENT: PodSpec<'static> = PodSpec {
    name: "client-0",
    pod_sa: "client",
    token_sa: Some("client"),
    labels: &[("app", "client"), MESHED],
};

/// A meshed echo server pod behind [`ECHO_SERVICE`], identity `echo`.
pub const ECHO: PodSpec<'static> = PodSpec {
    name: "echo-v1-0",
    pod_sa: "echo",
    token_sa: Some("echo"),
    labels: &[("app", "echo"), ("version", "v1"), MESHED],
};

/// The VIP of [`ECHO_SERVICE`] (HTTP on 8080, a TCP echo on 9000).
pub const ECHO_VIP: &str = "10.96.0.20";

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
    /// The agent's arguments after the common ones (for a restart).
    agent_argv: Vec<String>,
    _node: Node,
}

impl MeshNet {
    pub fn new(services_yaml: &str, specs: &[PodSpec<'_>], proxy_extra: &[&str]) -> MeshNet {
        MeshNet::with(services_yaml, specs, &[], proxy_extra)
    }

    /// Like [`MeshNet::new`], with extra arguments for the agent.
    pub fn with(
        services_yaml: &str,
        specs: &[PodSpec<'_>],
        agent_extra: &[&str],
        proxy_extra: &[&str],
    ) -> MeshNet {
        let node = Node::new().unwrap();
        let pods: Vec<Pod> = specs
            .iter()
            .map(|s| node.add_pod(s.name, "default").unwrap())
            .collect();
        let config = ViewDir::new();
        let files = ViewDir::new();
        write(&config.0, "services.yaml", services_yaml);
        let mut yaml: Vec<String> = specs
            .iter()
            .zip(&pods)
            .map(|(s, p)| pod_yaml(s.name, &p.ip().to_string(), s.pod_sa, s.labels))
            .collect();
        for s in specs {
            if let Some(sa) = s.token_sa.filter(|sa| *sa != s.pod_sa) {
                yaml.push(format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: default}}\n\
                     spec: {{serviceAccountName: {sa}, containers: [{{name: app, image: echo}}]}}\n",
                    stolen(s.name)
                ));
            }
        }
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
        let agent_addr = agent_addr();
        let (tokens, root_out) = (files.0.join("ca-tokens"), files.0.join("root-cert.pem"));
        let mut argv = vec![
            "--ca-tokens",
            tokens.to_str().unwrap(),
            "--ca-root-out",
            root_out.to_str().unwrap(),
        ];
        argv.extend_from_slice(agent_extra);
        let agent = start_agent(&node, &config.0, &argv);
        let agent_argv = argv.iter().map(|a| a.to_string()).collect();
        // The root bundle is published as a file (local mode's istio-ca-root-cert).
        let root = std::fs::read_to_string(&root_out).unwrap();
        assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
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
                let as_pod = match s.token_sa {
                    Some(sa) if sa != s.pod_sa => stolen(s.name),
                    _ => s.name.to_string(),
                };
                mine.push(start_sidecar(
                    pod,
                    &as_pod,
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
            agent_argv,
            _node: node,
        }
    }

    /// Stops the agent (SIGTERM, reaped) and starts it again with the same
    /// arguments; sidecars reconnect on their own. (Its CA survives the
    /// restart only from a `--ca-dir`.)
    pub fn restart_agent(&mut self) {
        self.agent
            .signal(nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        self.agent.wait(Duration::from_secs(10)).unwrap();
        let argv: Vec<&str> = self.agent_argv.iter().map(String::as_str).collect();
        self.agent = start_agent(&self._node, &self.config.0, &argv);
    }

    /// The body of `GET path` on the agent's debug port ("" while it does not answer).
    pub fn agent_get(&self, path: &str) -> String {
        node_exec(
            &self._node,
            &["curl", "-s", &format!("http://127.0.0.1:15014{path}")],
        )
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

/// The pod an impostor's sidecar follows (see the module doc).
fn stolen(name: &str) -> String {
    format!("{name}-stolen")
}

fn start_sidecar(
    pod: &Pod,
    as_pod: &str,
    labels: &str,
    sa: &str,
    agent: &str,
    token: &Path,
    extra: &[&str],
) -> PodProcess {
    // The agent publishes its root bundle beside the tokens (--ca-root-out);
    // sidecars verify the agent's TLS port (15012) against it.
    let root = token.with_file_name("root-cert.pem");
    let mut config = vec![
        "--service-account",
        sa,
        "--agent",
        agent,
        "--ca-token-file",
        token.to_str().unwrap(),
        "--ca-root-file",
        root.to_str().unwrap(),
    ];
    config.extend_from_slice(extra);
    start_proxy_as(pod, as_pod, labels, &config)
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

/// One echo round trip over a new TCP connection (a fresh mTLS handshake
/// between the sidecars); run it inside the client's network namespace.
pub fn tcp_echo_once(vip: &str, port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect((vip, port)).map_err(|e| format!("tcp connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"rotate\n")
        .map_err(|e| format!("tcp write: {e}"))?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)
        .map_err(|e| format!("tcp read: {e}"))?;
    if &buf != b"rotate\n" {
        return Err(format!("tcp echo {buf:?}"));
    }
    Ok(())
}

/// New TCP connections from `pod` to the echo service, one every 20 ms, until
/// `stop`: the number that worked and the errors of those that did not.
pub fn tcp_echo_loop(
    pod: &Pod,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<String>)> {
    in_netns(pod, move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match tcp_echo_once(ECHO_VIP, 9000) {
                Ok(()) => ok += 1,
                Err(e) => failed.push(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, failed)
    })
}

/// h2load's summary of a load run that must have lost nothing.
pub struct H2load {
    pub line: String,
    pub codes: String,
    pub succeeded: u64,
}

impl H2load {
    /// Parses h2load's output and asserts that no request failed, errored or
    /// timed out, and that every answer was a 2xx.
    pub fn clean(out: &std::process::Output) -> H2load {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let find = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in h2load's output: {text}"))
                .to_string()
        };
        let (line, codes) = (find("requests:"), find("status codes:"));
        let num = |what: &str| -> u64 {
            let re = regex::Regex::new(&format!(r"(\d+) {what}")).unwrap();
            re.captures(&line).unwrap()[1].parse().unwrap()
        };
        for bad in ["failed", "errored", "timeout"] {
            assert_eq!(num(bad), 0, "{bad}: {line}");
        }
        let succeeded = num("succeeded");
        assert!(codes.contains(&format!("{succeeded} 2xx")), "{codes}");
        H2load {
            line,
            codes,
            succeeded,
        }
    }
}
