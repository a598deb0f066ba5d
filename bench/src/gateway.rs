//! The ingress variants: client → gateway → server sidecar → app, on the same
//! node as the sidecar variants and interleaved with them.
//!
//! - the client pod runs only the load generator: no sidecar, no redirect
//!   rules (Istio's "outside the mesh" client);
//! - the gateway pod (namespace `istio-system`, no capture, as Istio's
//!   ingress gateway) runs `mesh-proxy router` or Envoy 1.40 as UID 1337 with
//!   one worker, listening on 8080 (HTTP) and 8443 (HTTPS terminated with a
//!   server certificate for [`HOST`] from a bench root), and routes
//!   `Host: bench.example.com` to the server pod's port 8080;
//! - the server pod is the sidecar variants' server: redirect rules, the same
//!   app, and a sidecar of the same kind as the gateway (mesh-proxy or Envoy),
//!   which captures the gateway's connection.
//!
//! Both proxies on the path (gateway, server sidecar) are the ones whose CPU
//! and memory the run samples. The hop gateway → sidecar is plaintext, like
//! the sidecar variants with mTLS off.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use mesh_api::networking::VirtualServiceSpec;
use mesh_api::networking::{Destination, HttpRoute, HttpRouteDestination, PortSelector};
use mesh_api::syncapi::{
    GatewayListener, GatewayServer, GatewayTls, GatewayView, ProxyView, TlsCredential,
};
use mesh_e2e::harness::{Node, Pod, PodProcess};

use crate::topology::{
    counted, redirect, resolve_pids, start_app, start_envoy, start_envoy_sidecar, start_mesh_proxy,
    view, wait_http_ok, write_readable, Bins, Deployment, TempDir, Variant, APP_UID, PORTS,
    PROXY_UID,
};

pub use crate::ports::{GatewayPorts, GATEWAY_PORTS};

/// The host the gateway serves (the Gateway's `hosts`, the certificate's SAN).
pub const HOST: &str = "bench.example.com";
/// `namespace/name` of the bench's Gateway and VirtualService.
pub const GATEWAY: &str = "istio-system/bench-gateway";
pub const VIRTUAL_SERVICE: &str = "default/bench";

/// The view `mesh-proxy router` gets: the registry of the sidecar variants
/// (the bench service with the server pod as endpoint) plus one Gateway with
/// an HTTP server on 80 → 8080 and a SIMPLE TLS server on 443 → 8443 for
/// [`HOST`], and one VirtualService bound to it routing every request to the
/// service's port 8080. `cert_pem`/`key_pem` are the HTTPS server's
/// credential, as the agent would read them from a `kubernetes.io/tls` Secret.
pub fn router_view(server: IpAddr, cert_pem: &str, key_pem: &str) -> ProxyView {
    let server_entry =
        |index: usize, name: &str, protocol: &str, tls: Option<GatewayTls>| GatewayServer {
            gateway: GATEWAY.into(),
            index,
            port_name: name.into(),
            protocol: protocol.into(),
            hosts: vec![HOST.into()],
            tls,
            virtual_services: vec![VIRTUAL_SERVICE.into()],
            ..Default::default()
        };
    let tls = GatewayTls {
        mode: "SIMPLE".into(),
        credential: Some(TlsCredential {
            source: "istio-system/bench-credential".into(),
            cert_chain: cert_pem.into(),
            private_key: key_pem.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let vs = VirtualServiceSpec {
        hosts: vec![HOST.into()],
        gateways: vec![GATEWAY.into()],
        http: vec![HttpRoute {
            route: vec![HttpRouteDestination {
                destination: Destination {
                    host: crate::topology::HOST.into(),
                    port: Some(PortSelector {
                        number: Some(u32::from(PORTS.http)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    ProxyView {
        gateway: Some(GatewayView {
            listeners: vec![
                GatewayListener {
                    port: GATEWAY_PORTS.http,
                    service_port: 80,
                    servers: vec![server_entry(0, "http", "HTTP", None)],
                },
                GatewayListener {
                    port: GATEWAY_PORTS.https,
                    service_port: 443,
                    servers: vec![server_entry(1, "https", "HTTPS", Some(tls))],
                },
            ],
            virtual_services: BTreeMap::from([(VIRTUAL_SERVICE.to_string(), vs)]),
            warnings: Vec::new(),
        }),
        ..view(server, false)
    }
}

/// Creates the client, gateway and server pods of a gateway `variant`, starts
/// the app, the server sidecar and the gateway, and checks that HTTP and HTTPS
/// requests for [`HOST`] go through the gateway and the server sidecar.
pub fn start(node: &Node, variant: Variant, bins: &Bins) -> anyhow::Result<Deployment> {
    let name = variant.name();
    let dir = TempDir::for_deployment(node, name)?;
    let client = node.add_pod(&format!("bench-client-{name}"), "default")?;
    let gateway = node.add_pod(&format!("bench-gw-{name}"), "istio-system")?;
    let server = node.add_pod(&format!("bench-server-{name}"), "default")?;
    redirect(&server, &bins.cni, &BTreeMap::new())?;
    let app = start_app(&server, bins)?;
    let cert = crate::certs::Ca::new()?.server_leaf(&dir.0, HOST)?;
    let procs = match variant {
        Variant::MeshProxyGateway => {
            let path = dir.0.join("view.json");
            write_readable(&path, &serde_json::to_vec(&view(server.ip(), false))?)?;
            let s = start_mesh_proxy(&server, &bins.proxy, &path, "app=bench-server", None)?;
            let cert_pem = std::fs::read_to_string(&cert.cert)?;
            let key_pem = std::fs::read_to_string(&cert.key)?;
            let path = dir.0.join("router-view.json");
            let rv = router_view(server.ip(), &cert_pem, &key_pem);
            write_readable(&path, &serde_json::to_vec(&rv)?)?;
            (start_router(&gateway, &bins.proxy, &path)?, s)
        }
        Variant::EnvoyGateway => {
            let envoy = bins.envoy.as_deref().context("Envoy is not available")?;
            let s = start_envoy_sidecar(&server, envoy, &dir.0, None, None)?;
            let cfg = crate::envoy::gateway_bootstrap(
                HOST,
                &GATEWAY_PORTS,
                server.ip(),
                PORTS.http,
                &cert,
            );
            (start_envoy(&gateway, envoy, &dir.0, &cfg)?, s)
        }
        other => bail!("{} is not a gateway variant", other.name()),
    };
    let sidecar_pids = resolve_pids(Some(&procs));
    let d = Deployment {
        variant,
        _sidecars: Some(procs),
        sidecar_pids,
        sink: None,
        _app: app,
        client,
        server,
        target_ip: gateway.ip(),
        gateway: Some(gateway),
        ca_root: Some(cert.root),
        _dir: dir,
    };
    check(&d)?;
    Ok(d)
}

/// `mesh-proxy router` in the gateway pod, as Istio's ingress gateway runs.
fn start_router(pod: &Pod, bin: &Path, view: &Path) -> anyhow::Result<PodProcess> {
    let ip = pod.ip().to_string();
    let mut p = pod.spawn(
        PROXY_UID,
        &[
            bin.to_str().context("proxy path")?,
            "router",
            "--view-file",
            view.to_str().context("view path")?,
            "--pod",
            pod.name(),
            "--namespace",
            "istio-system",
            "--service-account",
            "istio-ingressgateway-service-account",
            "--labels",
            "app=istio-ingressgateway,istio=ingressgateway",
            "--workload-name",
            "istio-ingressgateway",
            "--instance-ip",
            &ip,
            "--concurrency",
            "1",
        ],
    )?;
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(20))
        .context("mesh-proxy router (needs the `router` subcommand)")?;
    wait_http_ok(
        pod,
        "http://127.0.0.1:15021/healthz/ready",
        "mesh-proxy router",
    )?;
    Ok(p)
}

/// The curl arguments of one request for [`HOST`] through the gateway at `gw`:
/// plain HTTP with a `Host` header, or HTTPS with SNI and verification
/// against `root` (`--resolve`, as a client outside the cluster would).
pub fn curl_args(gw: IpAddr, https: bool, root: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "curl",
        "-sS",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
    ]
    .map(String::from)
    .to_vec();
    if https {
        let port = GATEWAY_PORTS.https;
        a.extend([
            "--cacert".into(),
            root.display().to_string(),
            "--resolve".into(),
            format!("{HOST}:{port}:{gw}"),
            format!("https://{HOST}:{port}/"),
        ]);
    } else {
        a.extend([
            "-H".into(),
            format!("Host: {HOST}"),
            format!("http://{gw}:{}/", GATEWAY_PORTS.http),
        ]);
    }
    a
}

/// One HTTP and one HTTPS request from the client pod through the gateway,
/// then proof from the server sidecar that it carried them (the gateway must
/// not reach the app around it).
fn check(d: &Deployment) -> anyhow::Result<()> {
    let root = d.ca_root.as_deref().context("gateway without a root")?;
    for https in [false, true] {
        let args = curl_args(d.target_ip, https, root);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = d.client.exec(APP_UID, &argv)?;
        let said = String::from_utf8_lossy(&out.stdout);
        if said != "200 1024" {
            bail!(
                "{}: `{}` from the client pod gave {said:?}: {}",
                d.variant.name(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let (url, needle) = match d.variant {
        Variant::MeshProxyGateway => (
            "http://127.0.0.1:15090/stats/prometheus",
            "istio_requests_total{reporter=\"destination\"",
        ),
        _ => (
            "http://127.0.0.1:15000/stats?filter=inbound_http_8080.downstream_rq_completed",
            "downstream_rq_completed: ",
        ),
    };
    let what = format!(
        "{}: the server sidecar counted no request from the gateway",
        d.variant.name()
    );
    counted(&d.server, url, needle, &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_view_binds_both_servers_to_the_virtual_service() {
        let v = router_view("10.88.0.9".parse().unwrap(), "CERT", "KEY");
        let gw = v.gateway.as_ref().expect("a gateway part");
        let ports: Vec<(u16, u16)> = gw
            .listeners
            .iter()
            .map(|l| (l.port, l.service_port))
            .collect();
        assert_eq!(ports, vec![(8080, 80), (8443, 443)]);
        let https = &gw.listeners[1].servers[0];
        assert_eq!(https.protocol, "HTTPS");
        let tls = https.tls.as_ref().expect("TLS on 443");
        assert_eq!(tls.mode, "SIMPLE");
        let cred = tls.credential.as_ref().expect("credential");
        assert_eq!(
            (cred.cert_chain.as_str(), cred.private_key.as_str()),
            ("CERT", "KEY")
        );
        assert!(gw.listeners[0].servers[0].tls.is_none());
        for l in &gw.listeners {
            assert_eq!(l.servers[0].virtual_services, vec![VIRTUAL_SERVICE]);
            assert_eq!(l.servers[0].hosts, vec![HOST]);
        }
        let vs = &gw.virtual_services[VIRTUAL_SERVICE];
        assert_eq!(vs.gateways, vec![GATEWAY]);
        let dest = &vs.http[0].route[0].destination;
        assert_eq!(dest.host, crate::topology::HOST);
        assert_eq!(dest.port.as_ref().and_then(|p| p.number), Some(8080));
        // The registry the route resolves against: the server pod as endpoint.
        assert_eq!(v.services[0].endpoints[0].address, "10.88.0.9");
    }

    #[test]
    fn curl_checks_https_by_name_and_http_by_host_header() {
        let gw: IpAddr = "10.88.0.7".parse().unwrap();
        let root = Path::new("/tmp/root.pem");
        let https = curl_args(gw, true, root).join(" ");
        assert!(https.contains("--cacert /tmp/root.pem"), "{https}");
        assert!(
            https.contains("--resolve bench.example.com:8443:10.88.0.7"),
            "{https}"
        );
        assert!(
            https.ends_with("https://bench.example.com:8443/"),
            "{https}"
        );
        let http = curl_args(gw, false, root).join(" ");
        assert!(
            http.ends_with("-H Host: bench.example.com http://10.88.0.7:8080/"),
            "{http}"
        );
    }
}
