//! One variant's pods on the shared node: a client pod and a server pod, each
//! with redirect rules written by the real `mesh-cni redirect`, the
//! fixed-response app in the server pod, and — unless the variant is `direct` —
//! a sidecar (Envoy or mesh-proxy, UID 1337, one worker thread) in each pod.
//! The gateway variants (client → gateway → server sidecar → app) are built
//! by [`crate::gateway`] from the helpers here.
//! Dropping a [`Deployment`] kills its processes, then removes its pods.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_api::syncapi::{Endpoint, ProxyView, Service, ServicePort};
use mesh_api::tracing::{TracingProvider, TracingView};
use mesh_api::{RedirectDefaults, RedirectParams};
use mesh_e2e::harness::{Node, Pod, PodProcess};
use serde::{Deserialize, Serialize};

pub use crate::certs::write_readable;
pub use crate::ports::{Ports, HOST, PORTS};

/// UID of the application and the load generator.
pub const APP_UID: u32 = 1000;
/// UID of the sidecars (Istio's proxy UID, excluded from capture).
pub const PROXY_UID: u32 = 1337;
/// The service's cluster IP in the meshed variants (captured, never routed).
pub const VIP: &str = "10.96.0.10";
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// No sidecars; the app ports are excluded from capture; the client calls
    /// the server pod's address.
    Direct,
    Envoy,
    MeshProxy,
    /// Envoy with mutual TLS 1.3 between the sidecars (certificates from the bench root).
    EnvoyMtls,
    /// mesh-proxy with auto mTLS, its certificates issued by mesh-agent's CA (same root).
    MeshProxyMtls,
    /// Ingress: a client without sidecar → Envoy as the gateway → an Envoy
    /// sidecar → the app.
    EnvoyGateway,
    /// Ingress: a client without sidecar → `mesh-proxy router` → a mesh-proxy
    /// sidecar → the app.
    MeshProxyGateway,
    /// mesh-proxy with tracing at Istio's default 1 % sampling, spans to the
    /// bench's Zipkin sink (`mesh-proxy` is the same with tracing off).
    #[serde(rename = "mesh-proxy-tracing-1")]
    MeshProxyTracing1,
    /// mesh-proxy with every request traced (100 % sampling).
    #[serde(rename = "mesh-proxy-tracing-100")]
    MeshProxyTracing100,
}

impl Variant {
    pub const ALL: [Variant; 9] = [
        Variant::Direct,
        Variant::Envoy,
        Variant::MeshProxy,
        Variant::EnvoyMtls,
        Variant::MeshProxyMtls,
        Variant::EnvoyGateway,
        Variant::MeshProxyGateway,
        Variant::MeshProxyTracing1,
        Variant::MeshProxyTracing100,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Envoy => "envoy",
            Variant::MeshProxy => "mesh-proxy",
            Variant::EnvoyMtls => "envoy-mtls",
            Variant::MeshProxyMtls => "mesh-proxy-mtls",
            Variant::EnvoyGateway => "envoy-gateway",
            Variant::MeshProxyGateway => "mesh-proxy-gateway",
            Variant::MeshProxyTracing1 => "mesh-proxy-tracing-1",
            Variant::MeshProxyTracing100 => "mesh-proxy-tracing-100",
        }
    }
    /// The sampling percentage of the tracing variants.
    pub fn tracing_percent(self) -> Option<f64> {
        match self {
            Variant::MeshProxyTracing1 => Some(1.0),
            Variant::MeshProxyTracing100 => Some(100.0),
            _ => None,
        }
    }
    pub fn mtls(self) -> bool {
        matches!(self, Variant::EnvoyMtls | Variant::MeshProxyMtls)
    }
    pub fn is_envoy(self) -> bool {
        matches!(
            self,
            Variant::Envoy | Variant::EnvoyMtls | Variant::EnvoyGateway
        )
    }
    /// Client → gateway → server sidecar → app (the ingress scenarios).
    pub fn is_gateway(self) -> bool {
        matches!(self, Variant::EnvoyGateway | Variant::MeshProxyGateway)
    }
    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// Programs the deployments run.
#[derive(Debug, Clone)]
pub struct Bins {
    pub cni: PathBuf,
    pub proxy: PathBuf,
    pub agent: PathBuf,
    pub bench: PathBuf,
    pub envoy: Option<PathBuf>,
}

/// A running variant. Field order is drop order: processes before pods.
pub struct Deployment {
    pub variant: Variant,
    /// (client sidecar, server sidecar) — (gateway, server sidecar) in the
    /// gateway variants — and their real pids: the CPU and memory figures are
    /// these two proxies'.
    pub(crate) _sidecars: Option<(PodProcess, PodProcess)>,
    pub sidecar_pids: Option<(u32, u32)>,
    /// The tracing variants' span sink.
    pub sink: Option<crate::zipkin::ZipkinSink>,
    pub(crate) _app: PodProcess,
    pub client: Pod,
    pub server: Pod,
    /// The gateway pod of the gateway variants.
    pub gateway: Option<Pod>,
    /// Address the load generator targets (VIP, the server pod for direct, the
    /// gateway pod for the gateway variants).
    pub target_ip: IpAddr,
    /// The root the load generator trusts for the gateway's HTTPS port.
    pub ca_root: Option<PathBuf>,
    pub(crate) _dir: TempDir,
}

/// A world-readable folder for configs the sidecars (UID 1337) read.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// `mesh-bench-<node>-<name>` under the temp dir, mode 0755.
    pub(crate) fn for_deployment(node: &Node, name: &str) -> anyhow::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("mesh-bench-{}-{name}", node.id()));
        std::fs::create_dir_all(&dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the pod's redirect rules as istio-init would, with `annotations`.
pub(crate) fn redirect(
    pod: &Pod,
    cni: &Path,
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let flags = RedirectParams::for_pod(annotations, &RedirectDefaults::default())?.to_flags();
    let mut argv: Vec<&str> = vec![cni.to_str().context("cni path")?, "redirect"];
    argv.extend(flags.iter().map(String::as_str));
    let out = pod.exec(0, &argv)?;
    if !out.status.success() {
        bail!(
            "mesh-cni redirect in {}: {}",
            pod.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Polls `url` inside the pod until it answers 200 (bounded).
pub(crate) fn wait_http_ok(pod: &Pod, url: &str, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = pod.exec(
            0,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                url,
            ],
        )?;
        if out.stdout == b"200" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} in {} never answered 200 on {url}", pod.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tracing of a `percent` variant: Zipkin to the bench's sink, no custom tags.
pub(crate) fn tracing(sink: &crate::zipkin::ZipkinSink, percent: f64) -> TracingView {
    TracingView {
        provider: Some(TracingProvider::Zipkin {
            address: sink.addr.clone(),
        }),
        sampling: percent,
        ..Default::default()
    }
}

pub(crate) fn view(server: IpAddr, mtls: bool) -> ProxyView {
    let port = |name: &str, port: u16, protocol: &str| ServicePort {
        name: name.into(),
        port,
        target_port: Some(port),
        protocol: protocol.into(),
    };
    ProxyView {
        version: 1,
        services: vec![std::sync::Arc::new(Service {
            hostname: HOST.into(),
            namespace: "default".into(),
            origin: "Kubernetes".into(),
            addresses: vec![VIP.into()],
            ports: vec![
                port("http", PORTS.http, "HTTP"),
                port("http2", PORTS.h2, "HTTP2"),
                port("tcp", PORTS.tcp, "TCP"),
            ],
            endpoints: vec![Endpoint {
                address: server.to_string(),
                labels: if mtls {
                    BTreeMap::from([
                        ("app".into(), "bench-server".into()),
                        ("security.istio.io/tlsMode".into(), "istio".into()),
                    ])
                } else {
                    BTreeMap::from([("app".into(), "bench-server".into())])
                },
                ready: true,
                ..Default::default()
            }],
            ..Default::default()
        })],
        outbound_traffic_policy: "ALLOW_ANY".into(),
        inbound: mesh_api::syncapi::InboundPolicy {
            // Like the Envoy variant's `require_client_certificate`.
            mtls_mode: if mtls { "STRICT" } else { "PERMISSIVE" }.into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The node-level half of the mTLS variants: the bench root, mesh-agent as the
/// mesh CA on the bridge address (with a local token per mesh-proxy pod), and
/// Envoy's leaf certificates. Dropped after every deployment.
pub struct MeshCa {
    ca: crate::certs::Ca,
    dir: TempDir,
    _agent: PodProcess,
    tokens: std::sync::Mutex<String>,
}

impl MeshCa {
    pub fn start(node: &Node, bins: &Bins) -> anyhow::Result<MeshCa> {
        let dir = std::env::temp_dir().join(format!("mesh-bench-{}-ca", node.id()));
        std::fs::create_dir_all(dir.join("config"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let dir = TempDir(dir);
        let ca = crate::certs::Ca::new()?;
        ca.write_cacerts(&dir.0.join("cacerts"))?;
        std::fs::write(dir.0.join("tokens"), "")?;
        // The agent binds the bridge address, which exists once a pod is attached
        // or, before that, once the bridge is created here (the bridge plugin
        // adopts an existing bridge).
        let ns = node.netns();
        let gw = format!("{}/16", mesh_e2e::harness::GATEWAY);
        let sh = format!(
            "ip link show cni0 >/dev/null 2>&1 || {{ ip link add cni0 type bridge && ip addr add {gw} dev cni0; }}; ip link set cni0 up"
        );
        let st = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &sh])
            .status()?;
        anyhow::ensure!(st.success(), "creating the bridge for the CA");
        let listen = format!("{}:15012", mesh_e2e::harness::GATEWAY);
        let p = |x: &Path| x.display().to_string();
        let mut agent = node.spawn(&[
            bins.agent.to_str().context("agent path")?,
            "--config-dir",
            &p(&dir.0.join("config")),
            "--listen",
            &listen,
            "--debug-listen",
            "127.0.0.1:15014",
            "--ca-dir",
            &p(&dir.0.join("cacerts")),
            "--ca-tokens",
            &p(&dir.0.join("tokens")),
            // 15012 is TLS: sidecars verify it against the published bundle.
            "--ca-root-out",
            &p(&dir.0.join("root-cert.pem")),
        ])?;
        agent.wait_for_line("mesh-agent listening", Duration::from_secs(20))?;
        Ok(MeshCa {
            ca,
            dir,
            _agent: agent,
            tokens: std::sync::Mutex::new(String::new()),
        })
    }

    /// A token file for `pod` (service account = pod name), known to the CA.
    fn token(&self, pod: &Pod) -> anyhow::Result<PathBuf> {
        let token = format!("bench-{}-{}", pod.name(), std::process::id());
        let mut all = self.tokens.lock().expect("tokens lock");
        all.push_str(&format!("{token} default {}\n", pod.name()));
        std::fs::write(self.dir.0.join("tokens"), all.as_bytes())?;
        let path = self.dir.0.join(format!("{}.token", pod.name()));
        write_readable(&path, token.as_bytes())?;
        Ok(path)
    }

    fn envoy_leaf(&self, pod: &Pod) -> anyhow::Result<crate::certs::LeafFiles> {
        self.ca.leaf(&self.dir.0, pod.name())
    }
}

impl Deployment {
    /// Creates the pods, rules, app and sidecars of `variant` on `node`, and
    /// checks that one request goes through before returning.
    pub fn start(
        node: &Node,
        variant: Variant,
        bins: &Bins,
        ca: Option<&MeshCa>,
    ) -> anyhow::Result<Deployment> {
        let name = variant.name();
        let dir = TempDir::for_deployment(node, name)?;
        let client = node.add_pod(&format!("bench-client-{name}"), "default")?;
        let server = node.add_pod(&format!("bench-server-{name}"), "default")?;
        let app_ports = format!("{},{},{}", PORTS.http, PORTS.h2, PORTS.tcp);
        let (client_ann, server_ann) = if variant == Variant::Direct {
            use mesh_api::annotations::traffic;
            (
                BTreeMap::from([(
                    traffic::EXCLUDE_OUTBOUND_PORTS.to_string(),
                    app_ports.clone(),
                )]),
                BTreeMap::from([(traffic::EXCLUDE_INBOUND_PORTS.to_string(), app_ports)]),
            )
        } else {
            (BTreeMap::new(), BTreeMap::new())
        };
        redirect(&client, &bins.cni, &client_ann)?;
        redirect(&server, &bins.cni, &server_ann)?;
        let app = start_app(&server, bins)?;
        // After the pods: the sink binds the bridge address they attached to.
        let sink = match variant.tracing_percent() {
            Some(_) => Some(crate::zipkin::ZipkinSink::start(node)?),
            None => None,
        };
        let sidecars = match variant {
            Variant::Direct => None,
            Variant::MeshProxy
            | Variant::MeshProxyMtls
            | Variant::MeshProxyTracing1
            | Variant::MeshProxyTracing100 => {
                let mtls = variant.mtls();
                let path = dir.0.join("view.json");
                let mut v = view(server.ip(), mtls);
                if let (Some(sink), Some(p)) = (&sink, variant.tracing_percent()) {
                    v.tracing = Some(tracing(sink, p));
                }
                write_readable(&path, &serde_json::to_vec(&v)?)?;
                let token = |pod: &Pod| match (mtls, ca) {
                    (false, _) => Ok(None),
                    (true, Some(ca)) => ca.token(pod).map(Some),
                    (true, None) => bail!("the mTLS variant needs the mesh CA"),
                };
                let s = start_mesh_proxy(
                    &server,
                    &bins.proxy,
                    &path,
                    "app=bench-server",
                    token(&server)?,
                )?;
                let c = start_mesh_proxy(
                    &client,
                    &bins.proxy,
                    &path,
                    "app=bench-client",
                    token(&client)?,
                )?;
                Some((c, s))
            }
            Variant::EnvoyGateway | Variant::MeshProxyGateway => {
                bail!("{name} is built by gateway::start")
            }
            Variant::Envoy | Variant::EnvoyMtls => {
                let envoy = bins.envoy.as_deref().context("Envoy is not available")?;
                let leaf = |pod: &Pod| match (variant.mtls(), ca) {
                    (false, _) => Ok(None),
                    (true, Some(ca)) => ca.envoy_leaf(pod).map(Some),
                    (true, None) => bail!("the mTLS variant needs the bench root"),
                };
                let s = start_envoy_sidecar(&server, envoy, &dir.0, None, leaf(&server)?.as_ref())?;
                let c = start_envoy_sidecar(
                    &client,
                    envoy,
                    &dir.0,
                    Some(server.ip()),
                    leaf(&client)?.as_ref(),
                )?;
                Some((c, s))
            }
        };
        let sidecar_pids = resolve_pids(sidecars.as_ref());
        let target_ip = match variant {
            Variant::Direct => server.ip(),
            _ => VIP.parse().expect("static VIP"),
        };
        let d = Deployment {
            variant,
            _sidecars: sidecars,
            sidecar_pids,
            sink,
            _app: app,
            client,
            server,
            gateway: None,
            target_ip,
            ca_root: None,
            _dir: dir,
        };
        d.check()?;
        d.check_mtls()?;
        d.check_spans()?;
        Ok(d)
    }

    /// One request from the client pod (as the app UID) through the variant;
    /// traced (`x-client-trace-id` forces it) when the variant traces.
    fn check(&self) -> anyhow::Result<()> {
        let url = format!("http://{}:{}/", self.target_ip, PORTS.http);
        let mut argv = vec![
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &url,
        ];
        if self.sink.is_some() {
            argv.extend(["-H", "x-client-trace-id: bench"]);
        }
        let out = self.client.exec(APP_UID, &argv)?;
        let said = String::from_utf8_lossy(&out.stdout);
        if said != "200 1024" {
            // The proxy's own answer says why (e.g. a TLS handshake failure).
            let body = self
                .client
                .exec(APP_UID, &["curl", "-sS", "--max-time", "5", &url])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            bail!(
                "{}: GET {url} from the client pod gave {said:?} ({body:.300}): {}",
                self.variant.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// For the mTLS variants: proof from the server sidecar that the request
    /// came over mutual TLS (a misconfiguration must not measure plaintext).
    fn check_mtls(&self) -> anyhow::Result<()> {
        let (url, needle) = match self.variant {
            Variant::MeshProxyMtls => (
                "http://127.0.0.1:15090/stats/prometheus",
                "connection_security_policy=\"mutual_tls\"",
            ),
            Variant::EnvoyMtls => (
                "http://127.0.0.1:15000/stats?filter=ssl.handshake",
                "ssl.handshake: ",
            ),
            _ => return Ok(()),
        };
        let what = format!(
            "{}: the server sidecar shows no mutual-TLS request",
            self.variant.name()
        );
        counted(&self.server, url, needle, &what)
    }

    /// For the tracing variants: the forced trace of [`Self::check`] reaches
    /// the sink as its CLIENT and SERVER span, so a variant whose spans go
    /// nowhere is not measured as if it traced.
    fn check_spans(&self) -> anyhow::Result<()> {
        let Some(sink) = &self.sink else {
            return Ok(());
        };
        // The sink is new: these are the check's spans.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.spans() < 2 {
            if Instant::now() > deadline {
                bail!(
                    "{}: the Zipkin sink at {} got {} of the 2 spans of a forced trace",
                    self.variant.name(),
                    sink.addr,
                    sink.spans()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Whether the sidecars are still running (a crash must not go unnoticed).
    pub fn sidecars_alive(&self) -> bool {
        match self.sidecar_pids {
            None => true,
            Some((c, s)) => crate::procstat::alive(c) && crate::procstat::alive(s),
        }
    }
}

/// Fails with `what` unless a line of `url` (in `pod`) containing `needle` ends
/// in a positive number (a Prometheus sample or an Envoy `name: value` stat).
pub(crate) fn counted(pod: &Pod, url: &str, needle: &str, what: &str) -> anyhow::Result<()> {
    let out = pod.exec(0, &["curl", "-sS", "--max-time", "5", url])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let proven = text.lines().any(|l| {
        l.contains(needle)
            && l.rsplit([' ', ':'])
                .next()
                .and_then(|n| n.trim().parse::<f64>().ok())
                .is_some_and(|n| n > 0.0)
    });
    if !proven {
        bail!("{what} ({url}, lines with {needle:?}):\n{text:.2000}");
    }
    Ok(())
}

/// The app in `pod`: fixed 1 KB answers on the HTTP ports, TCP echo.
pub(crate) fn start_app(pod: &Pod, bins: &Bins) -> anyhow::Result<PodProcess> {
    let bench = bins.bench.to_str().context("bench path")?;
    let http_ports = format!("{},{}", PORTS.http, PORTS.h2);
    let tcp_port = PORTS.tcp.to_string();
    let mut app = pod.spawn(
        APP_UID,
        &[
            bench,
            "server",
            "--http-ports",
            &http_ports,
            "--tcp-port",
            &tcp_port,
            "--body",
            "1024",
        ],
    )?;
    app.wait_for_line("mesh-bench server listening", Duration::from_secs(10))?;
    Ok(app)
}

/// The real pids behind the two proxy processes (the pod harness starts them
/// through a wrapper).
pub(crate) fn resolve_pids(procs: Option<&(PodProcess, PodProcess)>) -> Option<(u32, u32)> {
    procs.map(|(c, s)| {
        (
            crate::procstat::resolve(c.pid()),
            crate::procstat::resolve(s.pid()),
        )
    })
}

pub(crate) fn start_mesh_proxy(
    pod: &Pod,
    bin: &Path,
    view: &Path,
    labels: &str,
    ca_token: Option<PathBuf>,
) -> anyhow::Result<PodProcess> {
    let ip = pod.ip().to_string();
    let mut argv: Vec<String> = [
        bin.to_str().context("proxy path")?,
        "--view-file",
        view.to_str().context("view path")?,
        "--pod",
        pod.name(),
        "--namespace",
        "default",
        "--service-account",
        pod.name(),
        "--labels",
        labels,
        "--instance-ip",
        &ip,
        "--concurrency",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(t) = ca_token {
        argv.extend([
            // The agent publishes its bundle next to the tokens (MeshCa::start).
            "--ca-root-file".to_string(),
            t.with_file_name("root-cert.pem").display().to_string(),
            "--ca-token-file".to_string(),
            t.display().to_string(),
            "--ca-addr".to_string(),
            format!("{}:15012", mesh_e2e::harness::GATEWAY),
        ]);
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut p = pod.spawn(PROXY_UID, &argv)?;
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(20))?;
    wait_http_ok(pod, "http://127.0.0.1:15021/healthz/ready", "mesh-proxy")?;
    Ok(p)
}

pub(crate) fn start_envoy_sidecar(
    pod: &Pod,
    bin: &Path,
    dir: &Path,
    upstream: Option<IpAddr>,
    tls: Option<&crate::certs::LeafFiles>,
) -> anyhow::Result<PodProcess> {
    start_envoy(
        pod,
        bin,
        dir,
        &crate::envoy::bootstrap(upstream, &PORTS, tls),
    )
}

/// Envoy in `pod` as UID 1337, one worker, with the bootstrap `cfg`; returns
/// once its admin says ready.
pub(crate) fn start_envoy(
    pod: &Pod,
    bin: &Path,
    dir: &Path,
    cfg: &serde_json::Value,
) -> anyhow::Result<PodProcess> {
    let path = dir.join(format!("envoy-{}.json", pod.name()));
    write_readable(&path, &serde_json::to_vec_pretty(cfg)?)?;
    let p = pod.spawn(
        PROXY_UID,
        &[
            bin.to_str().context("envoy path")?,
            "-c",
            path.to_str().context("config path")?,
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            &std::env::var("MESH_BENCH_ENVOY_LOG").unwrap_or_else(|_| "warning".into()),
        ],
    )?;
    wait_http_ok(pod, "http://127.0.0.1:15000/ready", "envoy")?;
    Ok(p)
}
