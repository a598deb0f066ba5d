//! Istio's "Egress Gateways" task on `meshctl local` with `outboundTrafficPolicy:
//! REGISTRY_ONLY`: an "external" HTTP server is an unmeshed pod in a namespace
//! without injection; a `MESH_EXTERNAL` ServiceEntry registers its host; a
//! Gateway on `istio-egressgateway`, a DestinationRule subset for the gateway
//! and a VirtualService bound to `mesh` and `istio-system/istio-egressgateway`
//! send the meshed client's calls through the egress gateway. The external
//! server sees the gateway's pod IP, the gateway's metrics count the calls;
//! without the routing the calls go direct, and without the ServiceEntry
//! REGISTRY_ONLY blocks them again. The TLS variant: PASSTHROUGH on the
//! gateway's 443, `tls` routes by `sniHosts`, the client speaking HTTPS end to
//! end to an `openssl s_server` in the external pod.

mod common;

use common::external::{service_entry, HOST, PARTNER};
use common::*;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Namespace `shop` (injection on) with a meshed `client` pod; the tests add
/// the unmeshed partner ([`PARTNER`]) beside it.
const APPS: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio-injection: enabled}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: shop}
spec:
  template:
    metadata: {labels: {app: client}}
    spec:
      containers:
      - {name: client, image: example/client, ports: [{containerPort: 8080}]}
";

const CLIENT: &str = "shop/client-0";
const EGRESS: &str = "istio-system/istio-egressgateway-0";

/// Gateway, DestinationRule and VirtualService of Istio's egress task.
fn egress_routing() -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [{HOST}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway-for-partner, namespace: shop}}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: partner
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct-partner-through-egress-gateway, namespace: shop}}
spec:
  hosts: [{HOST}]
  gateways: [istio-system/istio-egressgateway, mesh]
  http:
  - match:
    - gateways: [mesh]
      port: 8080
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: partner
        port: {{number: 80}}
      weight: 100
  - match:
    - gateways: [istio-system/istio-egressgateway]
      port: 80
    route:
    - destination:
        host: {HOST}
        port: {{number: 8080}}
      weight: 100
"
    )
}

fn gateway_count(mesh: &Local) -> f64 {
    metric_sum(
        &mesh.metrics(EGRESS),
        "istio_requests_total",
        &[
            "source_workload=\"istio-egressgateway\"",
            &format!("destination_service=\"{HOST}\""),
            "response_code=\"200\"",
        ],
    )
}

#[test]
fn http_to_an_external_host_through_the_egress_gateway_with_registry_only() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", &format!("{APPS}---\n{PARTNER}"));
    let meshcfg = mesh.file(
        "mesh.yaml",
        "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n",
    );
    mesh.ok(&[
        "up",
        "--gateways",
        "egress",
        "--mesh-config",
        &meshcfg,
        "-f",
        &apps,
    ]);
    let partner_ip = pod_ip(&mesh, "partner-0");
    let client_ip = pod_ip(&mesh, "client-0");
    let egress_ip = pod_ip(&mesh, "istio-egressgateway-0");

    // Unregistered: REGISTRY_ONLY blocks the call at the client's sidecar.
    let direct = format!("http://{partner_ip}:8080/");
    let blocked = mesh.calls(CLIENT, &direct, 2, &[]);
    assert!(
        blocked.iter().all(|(c, r)| *c == 502 && r.is_none()),
        "{blocked:?}"
    );

    // Registered and routed through the egress gateway.
    let se = mesh.file("se.yaml", &service_entry(&partner_ip, None));
    mesh.apply(&se, &[CLIENT, EGRESS]);
    let routing = mesh.file("egress.yaml", &egress_routing());
    mesh.apply(&routing, &[CLIENT, EGRESS]);
    let url = format!("http://{HOST}:8080/through");
    let res = mesh.calls(CLIENT, &url, 5, &[]);
    for (code, reply) in &res {
        assert_eq!(*code, 200, "{res:?}");
        let reply = reply.as_ref().expect("the partner's echo answer");
        assert_eq!(reply.pod, "partner-0");
        assert_eq!(reply.path, "/through");
        // The external server sees the egress gateway, not the client pod.
        let peer_ip = reply.peer.rsplit_once(':').unwrap().0;
        assert_eq!(peer_ip, egress_ip, "{reply:?}");
    }
    let counted = gateway_count(&mesh);
    assert!(counted >= 5.0, "{}", mesh.metrics(EGRESS));

    // Without the Gateway, DestinationRule and VirtualService the client's
    // sidecar goes to the registered host directly; the gateway sees nothing.
    mesh.change("delete", &routing, &[CLIENT, EGRESS]);
    let res = mesh.calls(CLIENT, &url, 2, &[]);
    for (code, reply) in &res {
        assert_eq!(*code, 200, "{res:?}");
        let peer = &reply.as_ref().unwrap().peer;
        assert_eq!(peer.rsplit_once(':').unwrap().0, client_ip, "{peer}");
    }
    assert_eq!(gateway_count(&mesh), counted);

    // Without the ServiceEntry too, REGISTRY_ONLY blocks it again.
    mesh.change("delete", &se, &[CLIENT]);
    let blocked = mesh.calls(CLIENT, &direct, 1, &[]);
    assert_eq!(blocked[0].0, 502, "{blocked:?}");
}

/// Gateway, DestinationRule and VirtualService of Istio's egress task for
/// HTTPS: the gateway passes TLS through, both hops are routed by SNI.
fn egress_tls_routing() -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [{HOST}]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway-for-partner, namespace: shop}}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: partner
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct-partner-through-egress-gateway, namespace: shop}}
spec:
  hosts: [{HOST}]
  gateways: [mesh, istio-system/istio-egressgateway]
  tls:
  - match:
    - gateways: [mesh]
      port: 8443
      sniHosts: [{HOST}]
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: partner
        port: {{number: 443}}
  - match:
    - gateways: [istio-system/istio-egressgateway]
      port: 443
      sniHosts: [{HOST}]
    route:
    - destination:
        host: {HOST}
        port: {{number: 8443}}
"
    )
}

/// `openssl s_server -www` in a pod, bounded by `timeout` and `-naccept`;
/// stopped by its pid on drop (also when the test panics).
struct TlsServer {
    child: Child,
    pid: Option<String>,
}

impl TlsServer {
    /// Starts it and waits (bounded) for its `ACCEPT` line.
    fn start(mesh: &Local, pod: &str, cert: &str, key: &str, accepts: usize) -> TlsServer {
        let script = format!(
            "echo $$; exec timeout 120 openssl s_server -www -accept 8443 -cert {cert} -key {key} -naccept {accepts}"
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(["local", "--name", &mesh.name, "--root"])
            .arg(&mesh.root)
            .args(["exec", pod, "--uid", "0", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = TlsServer { child, pid: None };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("openssl s_server did not print ACCEPT within 15s");
            if server.pid.is_none() {
                server.pid = Some(line.trim().to_string());
            } else if line.contains("ACCEPT") {
                return server;
            }
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(pid) = &self.pid {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tls_passthrough_to_an_external_host_through_the_egress_gateway() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", &format!("{APPS}---\n{PARTNER}"));
    let meshcfg = mesh.file(
        "mesh.yaml",
        "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n",
    );
    mesh.ok(&[
        "up",
        "--gateways",
        "egress",
        "--mesh-config",
        &meshcfg,
        "-f",
        &apps,
    ]);
    let partner_ip = pod_ip(&mesh, "partner-0");
    let (ca, cert, key) = certs("partner ca", HOST);
    let (ca, cert, key) = (
        mesh.file("ca.pem", &ca),
        mesh.file("cert.pem", &cert),
        mesh.file("key.pem", &key),
    );
    const CALLS: usize = 3;
    let _server = TlsServer::start(&mesh, "outside/partner-0", &cert, &key, CALLS + 1);

    let se = mesh.file(
        "se.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: partner, namespace: shop}}
spec:
  hosts: [{HOST}]
  addresses: [{partner_ip}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 8443, name: tls, protocol: TLS}}
  endpoints:
  - address: {partner_ip}
"
        ),
    );
    mesh.apply(&se, &[CLIENT, EGRESS]);
    let routing = mesh.file("egress-tls.yaml", &egress_tls_routing());
    mesh.apply(&routing, &[CLIENT, EGRESS]);

    // HTTPS end to end: the client verifies the external server's own
    // certificate (the gateway never terminates TLS); each call one connection.
    let url = format!("https://{HOST}:8443/");
    let res = mesh.calls(CLIENT, &url, CALLS, &["--cacert", &ca]);
    assert!(res.iter().all(|(c, _)| *c == 200), "{res:?}");
    let m = mesh.metrics(EGRESS);
    assert!(
        metric_sum(
            &m,
            "istio_tcp_connections_opened_total",
            &[
                "source_workload=\"istio-egressgateway\"",
                &format!("destination_service=\"{HOST}\""),
            ]
        ) >= CALLS as f64,
        "{m}"
    );
}
