//! Fixture shared by the proxy end-to-end tests: a node with a client pod and
//! server pods, redirect rules written by the real `mesh-cni redirect`, proxies
//! as UID 1337 fed a view file, echo apps as UID 1000.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
pub use std::time::{Duration, Instant};

pub use mesh_api::syncapi::{Endpoint, ProxyView, Service, ServicePort};
use mesh_api::{RedirectDefaults, RedirectParams};
use mesh_e2e::bins::workspace_bin;
pub use mesh_e2e::echo::EchoReply;
pub use mesh_e2e::harness::{Node, Pod, PodProcess};
// Not every test binary writes files.
#[allow(unused_imports)]
pub use mesh_e2e::testca::write_file as write;

pub const APP: u32 = 1000;
pub const PROXY: u32 = 1337;
pub const VIP: &str = "10.96.0.10";
pub const TCP_VIP: &str = "10.96.0.11";
pub const BANNER_VIP: &str = "10.96.0.12";
pub const H2_VIP: &str = "10.96.0.13";
pub const GRPC_VIP: &str = "10.96.0.14";

/// A world-readable folder for the view file (the proxy runs as 1337).
pub struct ViewDir(pub PathBuf);

impl ViewDir {
    pub fn new() -> ViewDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mesh-proxy-e2e-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        ViewDir(p)
    }
    /// Writes a view atomically (temp file + rename), as a config source must.
    pub fn write(&self, view: &ProxyView) -> PathBuf {
        let path = self.0.join("view.json");
        let tmp = self.0.join(".view.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(view).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for ViewDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn svc(
    host: &str,
    vip: &str,
    port: u16,
    name: &str,
    protocol: &str,
    eps: &[(IpAddr, &str)],
) -> Service {
    Service {
        hostname: host.into(),
        namespace: "default".into(),
        origin: "Kubernetes".into(),
        addresses: vec![vip.into()],
        ports: vec![ServicePort {
            name: name.into(),
            port,
            target_port: Some(port),
            protocol: protocol.into(),
        }],
        endpoints: eps
            .iter()
            .map(|(ip, version)| Endpoint {
                address: ip.to_string(),
                // The pods run sidecars: their endpoints say so, as injected pods' do.
                labels: BTreeMap::from([
                    ("app".into(), "echo".into()),
                    ("version".into(), version.to_string()),
                    ("security.istio.io/tlsMode".into(), "istio".into()),
                ]),
                ready: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Writes the pod's redirect rules exactly as istio-init would.
pub fn redirect(pod: &Pod) {
    let flags = RedirectParams::for_pod(&BTreeMap::new(), &RedirectDefaults::default())
        .unwrap()
        .to_flags();
    let cni = workspace_bin("mesh-cni");
    let mut argv: Vec<&str> = vec![cni.to_str().unwrap(), "redirect"];
    argv.extend(flags.iter().map(String::as_str));
    let out = pod.exec(0, &argv).unwrap();
    assert!(
        out.status.success(),
        "mesh-cni redirect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn start_proxy(pod: &Pod, view: &Path, labels: &str, extra: &[&str]) -> PodProcess {
    let mut config = vec!["--view-file", view.to_str().unwrap()];
    if !extra.contains(&"--drain-grace") {
        config.extend_from_slice(&["--drain-grace", "200ms"]);
    }
    config.extend_from_slice(extra);
    start_proxy_with(pod, labels, &config)
}

/// A sidecar (UID 1337) for `pod` in namespace `default` with `labels`,
/// configured by `config` (`--agent ADDR`, `--view-file FILE`, …); returns once
/// it is ready (config applied, and its certificate if it asked for one).
pub fn start_proxy_with(pod: &Pod, labels: &str, config: &[&str]) -> PodProcess {
    start_proxy_as(pod, pod.name(), labels, config)
}

/// Like [`start_proxy_with`], with the sidecar saying it is pod `name`.
pub fn start_proxy_as(pod: &Pod, name: &str, labels: &str, config: &[&str]) -> PodProcess {
    start_proxy_in(pod, name, "default", labels, config)
}

/// Like [`start_proxy_as`], with the sidecar in namespace `ns`.
pub fn start_proxy_in(
    pod: &Pod,
    name: &str,
    ns: &str,
    labels: &str,
    config: &[&str],
) -> PodProcess {
    let proxy = env!("CARGO_BIN_EXE_mesh-proxy");
    let ip = pod.ip().to_string();
    let mut argv = vec![
        SH,
        "-c",
        LOGS_TO_STDOUT,
        proxy,
        "--pod",
        name,
        "--namespace",
        ns,
        "--labels",
        labels,
        "--instance-ip",
        &ip,
    ];
    argv.extend_from_slice(config);
    let mut p = pod.spawn(PROXY, &argv).unwrap();
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(10))
        .unwrap();
    wait_ready(pod);
    p
}

/// A gateway (`mesh-proxy router`, UID 1337) in `pod`, fed the view file
/// `view`; returns once it is ready (its first view's listeners bound).
pub fn start_router(pod: &Pod, view: &Path, extra: &[&str]) -> PodProcess {
    let proxy = env!("CARGO_BIN_EXE_mesh-proxy");
    let mut argv = vec![
        SH,
        "-c",
        LOGS_TO_STDOUT,
        "env",
        // The listener changes are info lines; the tests wait for them.
        "PROXY_LOG=warn,mesh_proxy::gateway=info",
        proxy,
        "router",
        "--pod",
        pod.name(),
        "--namespace",
        pod.namespace(),
        "--view-file",
        view.to_str().unwrap(),
        "--drain-grace",
        "200ms",
    ];
    argv.extend_from_slice(extra);
    let mut p = pod.spawn(PROXY, &argv).unwrap();
    p.wait_for_line("mesh-proxy bound router", Duration::from_secs(10))
        .unwrap();
    wait_ready(pod);
    p
}

/// Agent and sidecars log to stderr; run them with stderr on stdout so tests
/// can wait for their log lines (`exec` keeps the process id).
const SH: &str = "/bin/sh";
const LOGS_TO_STDOUT: &str = "exec \"$0\" \"$@\" 2>&1";

/// Where sidecars reach the agent: the node's bridge address, port 15012.
pub fn agent_addr() -> String {
    format!("{}:15012", mesh_e2e::harness::GATEWAY)
}

/// A real `mesh-agent` on the node over the YAML folder `config` (debounce
/// 20 ms), listening on [`agent_addr`], with `extra` arguments.
pub fn start_agent(node: &Node, config: &Path, extra: &[&str]) -> PodProcess {
    let bin = workspace_bin("mesh-agent");
    let listen = agent_addr();
    let mut argv = vec![
        SH,
        "-c",
        LOGS_TO_STDOUT,
        bin.to_str().unwrap(),
        "--config-dir",
        config.to_str().unwrap(),
        "--listen",
        &listen,
        "--debug-listen",
        "127.0.0.1:15014",
        "--debounce-ms",
        "20",
    ];
    argv.extend_from_slice(extra);
    let mut agent = node.spawn(&argv).unwrap();
    agent
        .wait_for_line("mesh-agent listening", Duration::from_secs(10))
        .unwrap();
    agent
}

/// The `echo` Service (VIP 10.96.0.20, ports 8080 `http` and 9000 `tcp-echo`)
/// as Kubernetes YAML, for tests that run a real agent over a folder.
pub const ECHO_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: default\nspec:\n  clusterIP: 10.96.0.20\n  selector:\n    app: echo\n  ports:\n  - name: http\n    port: 8080\n    targetPort: 8080\n  - name: tcp-echo\n    port: 9000\n    targetPort: 9000\n";

/// Runs `argv` in the node's namespace (where the agent listens); its stdout.
pub fn node_exec(node: &Node, argv: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", node.netns()])
        .args(argv)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The agent's `/debug/syncz` (what `meshctl proxy-status` shows), read in
/// the node's namespace; `Null` while the agent does not answer.
pub fn agent_syncz(node: &Node) -> serde_json::Value {
    let text = node_exec(node, &["curl", "-s", "http://127.0.0.1:15014/debug/syncz"]);
    serde_json::from_str(&text).unwrap_or_default()
}

/// A Pod as the API server would list it: Running, Ready, at `ip`.
pub fn pod_yaml(name: &str, ip: &str, sa: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: {v}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n{labels}spec:\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: echo\nstatus:\n  phase: Running\n  podIP: {ip}\n  conditions:\n  - type: Ready\n    status: \"True\"\n"
    )
}

pub fn wait_ready(pod: &Pod) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = pod
            .exec(
                0,
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "http://127.0.0.1:15021/healthz/ready",
                ],
            )
            .unwrap();
        if out.stdout == b"200" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxy in {} never became ready",
            pod.name()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The tools venv's Python (tests/install-deps.sh puts `h2` and `grpcio` there).
pub fn python() -> String {
    let venv = std::env::var("MESH_TOOLS_VENV").unwrap_or_else(|_| "/opt/mesh-tools".into());
    format!("{venv}/bin/python")
}

/// Copies a script of proxy/tests next to the view file, where the app user
/// (UID 1000) can read it; returns its path.
pub fn stage_script(dir: &ViewDir, name: &str) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    let dst = dir.0.join(name);
    std::fs::copy(&src, &dst).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
    dst.to_str().unwrap().to_string()
}

pub fn start_echo(pod: &Pod, version: &str) -> PodProcess {
    let echo = workspace_bin("mesh-echo");
    let labels = format!("app=echo,version={version}");
    let mut p = pod
        .spawn(
            APP,
            &[
                echo.to_str().unwrap(),
                "--port",
                "8080",
                "--tcp-port",
                "9000",
                "--pod",
                pod.name(),
                "--labels",
                &labels,
                "--log-requests",
            ],
        )
        .unwrap();
    p.wait_for_line("mesh-echo listening", Duration::from_secs(10))
        .unwrap();
    p
}

pub fn curl(pod: &Pod, args: &[&str]) -> std::process::Output {
    let mut argv = vec!["curl", "-sS", "--max-time", "5"];
    argv.extend_from_slice(args);
    pod.exec(APP, &argv).unwrap()
}

/// The HTTP status code of one curl from the app of `pod` (`000`: no answer).
pub fn http_code(pod: &Pod, args: &[&str]) -> String {
    let mut argv = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    argv.extend_from_slice(args);
    String::from_utf8_lossy(&curl(pod, &argv).stdout).into_owned()
}

pub fn curl_echo(pod: &Pod, args: &[&str]) -> EchoReply {
    let out = curl(pod, args);
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn metrics(pod: &Pod) -> String {
    let out = pod
        .exec(
            0,
            &["curl", "-s", "http://127.0.0.1:15090/stats/prometheus"],
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sum of a metric's samples whose label set contains every `needle`.
pub fn metric_sum(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `f` every 25 ms until it gives a value (at most `secs` seconds).
pub fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The proxy admin's (port 15000) answer at `path`, fetched inside `pod`.
pub fn admin(pod: &Pod, path: &str) -> String {
    let url = format!("http://127.0.0.1:15000{path}");
    let out = pod.exec(0, &["curl", "-s", &url]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The echo app's `/__echo/stats` in `pod` (requests seen, most in flight at once).
pub fn echo_stats(pod: &Pod) -> serde_json::Value {
    let out = pod
        .exec(0, &["curl", "-s", "http://127.0.0.1:8080/__echo/stats"])
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

pub struct World {
    pub dir: ViewDir,
    pub view: ProxyView,
    /// Per server pod: (echo app, proxy).
    pub server_procs: Vec<(PodProcess, PodProcess)>,
    pub client_proxy: PodProcess,
    pub client: Pod,
    pub servers: Vec<Pod>,
    pub node: Node,
}

impl World {
    /// Waits (bounded) until the client's proxy runs the current view version.
    pub fn wait_applied(&self) {
        let want = self.view.version;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let dump = self
                .client
                .exec(0, &["curl", "-s", "http://127.0.0.1:15000/config_dump"])
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap_or_default();
            if v["version"] == want {
                return;
            }
            assert!(Instant::now() < deadline, "version {want} never applied");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Rewrites the view every proxy reads (atomically).
    pub fn update(&mut self, f: impl FnOnce(&mut ProxyView)) {
        f(&mut self.view);
        self.view.version += 1;
        self.dir.write(&self.view);
    }
}

/// Client pod + `n` server pods, all meshed; the echo service has every server as
/// an endpoint.
pub fn world(n: usize, policy: &str) -> World {
    world_with(n, policy, &[])
}

/// Like [`world`], with extra flags for every proxy.
pub fn world_with(n: usize, policy: &str, extra: &[&str]) -> World {
    let node = Node::new().unwrap();
    let client = node.add_pod("client-0", "default").unwrap();
    let servers: Vec<Pod> = (0..n)
        .map(|i| {
            node.add_pod(&format!("echo-v{}-0", i + 1), "default")
                .unwrap()
        })
        .collect();
    let eps: Vec<(IpAddr, String)> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (s.ip(), format!("v{}", i + 1)))
        .collect();
    let eps_ref: Vec<(IpAddr, &str)> = eps.iter().map(|(ip, v)| (*ip, v.as_str())).collect();
    let view = ProxyView {
        version: 1,
        services: vec![
            svc(
                "echo.default.svc.cluster.local",
                VIP,
                8080,
                "http",
                "HTTP",
                &eps_ref,
            )
            .into(),
            svc(
                "tcp-echo.default.svc.cluster.local",
                TCP_VIP,
                9000,
                "tcp-echo",
                "TCP",
                &eps_ref,
            )
            .into(),
            svc(
                "banner.default.svc.cluster.local",
                BANNER_VIP,
                9100,
                "banner",
                "UNKNOWN",
                &eps_ref,
            )
            .into(),
            svc(
                "echo-h2.default.svc.cluster.local",
                H2_VIP,
                8080,
                "http2",
                "HTTP2",
                &eps_ref,
            )
            .into(),
        ],
        outbound_traffic_policy: policy.into(),
        ..Default::default()
    };
    let dir = ViewDir::new();
    let path = dir.write(&view);
    let mut server_procs = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        redirect(s);
        let echo = start_echo(s, &format!("v{}", i + 1));
        let labels = format!("app=echo,version=v{}", i + 1);
        server_procs.push((echo, start_proxy(s, &path, &labels, extra)));
    }
    redirect(&client);
    let client_proxy = start_proxy(&client, &path, "app=client,version=v1", extra);
    World {
        dir,
        view,
        server_procs,
        client_proxy,
        client,
        servers,
        node,
    }
}
