//! A variant assembled from the pod building blocks, with its self-checks, and
//! the node's mesh CA. The CA lives here because only `Deployment::start`
//! reads its per-pod tokens and leaf certificates.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_e2e::harness::{Node, Pod, PodProcess};

use super::pods::{
    counted, redirect, resolve_pids, start_app, start_envoy_sidecar, start_mesh_proxy, TempDir,
};
use super::variant::{tracing, view, Bins, Variant, APP_UID, VIP};
use crate::certs::write_readable;
use crate::ports::PORTS;

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
