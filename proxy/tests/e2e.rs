//! mesh-proxy end to end, on pods built by the real CNI plugins, with the redirect
//! rules written by the real `mesh-cni redirect` (istio-init), the proxies running
//! as UID 1337 and the apps as UID 1000: requests from the client app really go
//! app → 15001 → server pod 15006 → app, and the metrics say so.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mesh_api::syncapi::{Endpoint, ProxyView, Service, ServicePort};
use mesh_api::{RedirectDefaults, RedirectParams};
use mesh_e2e::bins::workspace_bin;
use mesh_e2e::echo::EchoReply;
use mesh_e2e::harness::{Node, Pod, PodProcess};

const APP: u32 = 1000;
const PROXY: u32 = 1337;
const VIP: &str = "10.96.0.10";
const TCP_VIP: &str = "10.96.0.11";
const BANNER_VIP: &str = "10.96.0.12";
const H2_VIP: &str = "10.96.0.13";

/// A world-readable folder for the view file (the proxy runs as 1337).
struct ViewDir(PathBuf);

impl ViewDir {
    fn new() -> ViewDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mesh-proxy-e2e-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        ViewDir(p)
    }
    /// Writes a view atomically (temp file + rename), as a config source must.
    fn write(&self, view: &ProxyView) -> PathBuf {
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

fn svc(
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
                labels: BTreeMap::from([
                    ("app".into(), "echo".into()),
                    ("version".into(), version.to_string()),
                ]),
                ready: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Writes the pod's redirect rules exactly as istio-init would.
fn redirect(pod: &Pod) {
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

fn start_proxy(pod: &Pod, view: &Path, labels: &str, extra: &[&str]) -> PodProcess {
    let proxy = env!("CARGO_BIN_EXE_mesh-proxy");
    let ip = pod.ip().to_string();
    let mut argv = vec![
        proxy,
        "--view-file",
        view.to_str().unwrap(),
        "--pod",
        pod.name(),
        "--namespace",
        "default",
        "--labels",
        labels,
        "--instance-ip",
        &ip,
        "--drain-grace",
        "200ms",
    ];
    argv.extend_from_slice(extra);
    let mut p = pod.spawn(PROXY, &argv).unwrap();
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(10))
        .unwrap();
    wait_ready(pod);
    p
}

fn wait_ready(pod: &Pod) {
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

fn start_echo(pod: &Pod, version: &str) -> PodProcess {
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
            ],
        )
        .unwrap();
    p.wait_for_line("mesh-echo listening", Duration::from_secs(10))
        .unwrap();
    p
}

fn curl(pod: &Pod, args: &[&str]) -> std::process::Output {
    let mut argv = vec!["curl", "-sS", "--max-time", "5"];
    argv.extend_from_slice(args);
    pod.exec(APP, &argv).unwrap()
}

fn curl_echo(pod: &Pod, args: &[&str]) -> EchoReply {
    let out = curl(pod, args);
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn metrics(pod: &Pod) -> String {
    let out = pod
        .exec(
            0,
            &["curl", "-s", "http://127.0.0.1:15090/stats/prometheus"],
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sum of a metric's samples whose label set contains every `needle`.
fn metric_sum(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct World {
    _dir: ViewDir,
    _procs: Vec<PodProcess>,
    client: Pod,
    servers: Vec<Pod>,
    _node: Node,
}

/// Client pod + `n` server pods, all meshed; the echo service has every server as
/// an endpoint.
fn world(n: usize, policy: &str) -> World {
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
            ),
            svc(
                "tcp-echo.default.svc.cluster.local",
                TCP_VIP,
                9000,
                "tcp-echo",
                "TCP",
                &eps_ref,
            ),
            svc(
                "banner.default.svc.cluster.local",
                BANNER_VIP,
                9100,
                "banner",
                "UNKNOWN",
                &eps_ref,
            ),
            svc(
                "echo-h2.default.svc.cluster.local",
                H2_VIP,
                8080,
                "http2",
                "HTTP2",
                &eps_ref,
            ),
        ],
        outbound_traffic_policy: policy.into(),
        ..Default::default()
    };
    let dir = ViewDir::new();
    let path = dir.write(&view);
    let mut procs = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        redirect(s);
        procs.push(start_echo(s, &format!("v{}", i + 1)));
        let labels = format!("app=echo,version=v{}", i + 1);
        procs.push(start_proxy(s, &path, &labels, &[]));
    }
    redirect(&client);
    procs.push(start_proxy(&client, &path, "app=client,version=v1", &[]));
    World {
        _dir: dir,
        _procs: procs,
        client,
        servers,
        _node: node,
    }
}

#[test]
fn http1_and_h2c_go_through_both_sidecars() {
    let w = world(1, "ALLOW_ANY");
    let server = &w.servers[0];
    let url = format!("http://{VIP}:8080/hello?x=1");
    let r = curl_echo(
        &w.client,
        &[
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            &url,
        ],
    );
    assert_eq!(r.pod, server.name());
    // The app sees the inbound sidecar's passthrough source, proving the hop via 15006.
    assert!(r.peer.starts_with("127.0.0.6:"), "peer {}", r.peer);
    assert!(r.local.starts_with("127.0.0.1:8080"), "local {}", r.local);
    assert_eq!(
        r.headers.get("traceparent").map(String::as_str),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert!(
        r.headers.contains_key("x-request-id"),
        "request id generated: {:?}",
        r.headers
    );
    assert!(
        !r.headers.contains_key("x-mesh-peer-metadata"),
        "peer metadata must not reach the app"
    );

    // h2c from the app to a port declared `http`: Istio carries it as HTTP/1.1 upstream.
    let r2 = curl_echo(&w.client, &["--http2-prior-knowledge", &url]);
    assert_eq!(r2.protocol, "HTTP/1.1");
    assert!(r2.peer.starts_with("127.0.0.6:"));
    // To a port declared `http2`, HTTP/2 all the way to the app.
    let r3 = curl_echo(
        &w.client,
        &[
            "--http2-prior-knowledge",
            &format!("http://{H2_VIP}:8080/h2"),
        ],
    );
    assert_eq!(r3.protocol, "HTTP/2.0");
    assert!(r3.peer.starts_with("127.0.0.6:"));

    // h2load: 200 requests over 4 connections, all 2xx.
    let out = w
        .client
        .exec(APP, &["h2load", "-n", "200", "-c", "4", "-m", "4", &url])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("200 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("status codes: 200 2xx"), "{text}");

    // Both proxies counted the requests with Istio's names and labels.
    let cm = metrics(&w.client);
    let sm = metrics(server);
    let svc = "destination_service=\"echo.default.svc.cluster.local\"";
    let src = metric_sum(
        &cm,
        "istio_requests_total",
        &[
            "reporter=\"source\"",
            svc,
            "response_code=\"200\"",
            "source_workload=\"client\"",
        ],
    );
    let dst = metric_sum(
        &sm,
        "istio_requests_total",
        &[
            "reporter=\"destination\"",
            svc,
            "response_code=\"200\"",
            "source_workload=\"client\"",
            "destination_version=\"v1\"",
        ],
    );
    assert_eq!(src, 202.0, "{cm}");
    assert_eq!(dst, 202.0, "{sm}");
    assert!(metric_sum(&cm, "istio_request_duration_milliseconds_count", &[svc]) >= 202.0);
    let h2svc = "destination_service=\"echo-h2.default.svc.cluster.local\"";
    assert_eq!(
        metric_sum(
            &sm,
            "istio_requests_total",
            &["reporter=\"destination\"", h2svc]
        ),
        1.0,
        "{sm}"
    );
    assert!(
        cm.contains("destination_workload=\"echo-v1\""),
        "peer metadata exchanged: {cm}"
    );
}

#[test]
fn tcp_and_server_first_protocols() {
    let w = world(1, "ALLOW_ANY");
    // Declared TCP port: echo through both sidecars.
    let script = format!("exec 3<>/dev/tcp/{TCP_VIP}/9000; echo ping >&3; read -r e <&3; echo $e");
    let out = w
        .client
        .exec(APP, &["timeout", "5", "bash", "-c", &script])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ping");
    let cm = metrics(&w.client);
    assert_eq!(
        metric_sum(
            &cm,
            "istio_tcp_connections_opened_total",
            &["destination_service=\"tcp-echo.default.svc.cluster.local\""]
        ),
        1.0,
        "{cm}"
    );
    assert_eq!(
        metric_sum(
            &cm,
            "istio_tcp_sent_bytes_total",
            &["destination_service=\"tcp-echo.default.svc.cluster.local\""]
        ),
        5.0,
        "{cm}"
    );
}

#[test]
fn registry_only_refuses_unknown_destinations_allow_any_passes() {
    for (policy, expect_ok) in [("ALLOW_ANY", true), ("REGISTRY_ONLY", false)] {
        let w = world(1, policy);
        // An address no service owns: a pod outside the registry, reached directly on another port.
        let outside = w.servers[0].ip();
        let out = curl(
            &w.client,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{outside}:8081/"),
            ],
        );
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        if expect_ok {
            // Passed through to the original destination: the server's sidecar answers
            // (nothing listens on 8081 there), i.e. the request left the client pod.
            assert_ne!(code, "502", "{policy}: {code}");
        } else {
            assert_eq!(code, "502", "{policy}");
            let cm = metrics(&w.client);
            assert!(
                metric_sum(
                    &cm,
                    "istio_requests_total",
                    &["response_flags=\"NR\"", "response_code=\"502\""]
                ) >= 1.0,
                "{cm}"
            );
        }
    }
}

#[test]
fn three_endpoints_share_the_load() {
    let w = world(3, "ALLOW_ANY");
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..60 {
        let r = curl_echo(&w.client, &[&format!("http://{VIP}:8080/")]);
        *counts.entry(r.pod).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|c| *c >= 8),
        "least-request spreads sequential calls: {counts:?}"
    );
}
