//! Gateway API automated deployment on `meshctl local`: a Gateway of class
//! `istio` (HTTP listener on port 80) gets its `<name>-istio` Deployment,
//! Service and ServiceAccount, run like the installed gateways: the pod is
//! `mesh-proxy router`, binds port 80 as UID 1337, answers readiness on 15021,
//! and its LoadBalancer ports are published on the host and printed. A
//! hand-written Istio Gateway selecting `gateway.networking.k8s.io/gateway-name`
//! and a VirtualService route a curl from the host through the published port
//! to an echo backend (independent of any Gateway API translation). Deleting
//! the Gateway stops the pod and releases the host port.

mod common;

use common::*;
use mesh_e2e::wait::eventually_blocking;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

const APPS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: example/web
        ports: [{containerPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: strict, namespace: shop}
spec:
  template:
    metadata: {labels: {app: strict}}
    spec:
      securityContext:
        sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: \"1024\"}]
      containers:
      - name: strict
        image: example/strict
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-routes, namespace: shop}
spec:
  selector: {gateway.networking.k8s.io/gateway-name: edge}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shop.example]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example]
  gateways: [shop-routes]
  http:
  - route:
    - destination: {host: web.shop.svc.cluster.local, port: {number: 80}}
";

/// Its own listener hostname, so a translation of it (when there is one)
/// never serves `shop.example`.
const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    hostname: gwapi.example
    port: 80
    protocol: HTTP
";

/// GET through the host, with a Host header.
fn get(addr: &str, host: &str, path: &str) -> (u16, Option<EchoReply>, String) {
    curl(&[
        "-H",
        &format!("Host: {host}"),
        &format!("http://{addr}{path}"),
    ])
}

#[test]
fn gateway_api_gateway_is_deployed_serves_on_port_80_and_goes_with_its_gateway() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    let gw = mesh.file("gateway.yaml", GATEWAY);
    let up = mesh.ok(&["up", "-f", &apps, "-f", &gw]);
    assert!(up.contains("pod/edge-istio-0 (shop)"), "{up}");
    let line = up
        .lines()
        .find(|l| l.contains("service shop/edge-istio published on the host"))
        .unwrap_or_else(|| panic!("{up}"));
    for p in ["15021 → 127.0.0.1:", "80 → 127.0.0.1:"] {
        assert!(line.contains(p), "{line}");
    }

    // The injector's gateway template made it a router, with the generated
    // service account and Istio's labels.
    let pod_file = mesh
        .root
        .join(&mesh.name)
        .join("config/pods/shop_edge-istio-0.yaml");
    let pod: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&pod_file).unwrap()).unwrap();
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["router"])
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "edge-istio");
    assert_eq!(
        pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"],
        "edge"
    );
    let pods = mesh.ok(&["pods"]);
    assert!(
        pods.lines()
            .any(|l| l.contains("edge-istio-0") && l.contains("Running")),
        "{pods}"
    );

    // Readiness through the published status port.
    let status = mesh.ok(&["service-url", "edge-istio", "-n", "shop", "--port", "15021"]);
    let status = status.trim();
    eventually_blocking("readiness 200 on 15021", LIMIT, || {
        get(status, "x", "/healthz/ready").0 == 200
    });

    // Port 80 (below 1024, bound by UID 1337) routes to the backend.
    let addr = mesh.ok(&["service-url", "edge-istio", "-n", "shop", "--port", "80"]);
    let addr = addr.trim().to_string();
    let mut last = String::new();
    eventually_blocking(
        "a routed request through the gateway's port 80",
        LIMIT,
        || {
            let (code, reply, err) = get(&addr, "shop.example", "/hello");
            last = format!("{code} {err}");
            code == 200 && reply.is_some_and(|r| r.pod == "web-0" && r.path == "/hello")
        },
    );
    // The router itself listens on 80 in its pod (targetPort = port).
    let ss = mesh.exec(
        "shop/edge-istio-0",
        Some(0),
        &["ss", "-Htln", "sport = :80"],
    );
    let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
    assert!(ss.contains(":80"), "{ss}\n{last}");

    // The sysctl is the pod's own (per network namespace): UID 1337 may bind
    // below 1024 in the gateway pod, not in a pod that asks for 1024.
    let bind81 = "import socket; socket.socket().bind(('0.0.0.0', 81))";
    let ok = mesh.exec(
        "shop/edge-istio-0",
        Some(1337),
        &["/usr/bin/python3", "-c", bind81],
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let refused = mesh.exec(
        "shop/strict-0",
        Some(1337),
        &["/usr/bin/python3", "-c", bind81],
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("Permission denied"),
        "{}",
        text(&refused)
    );

    // Deleting the Gateway deletes its deployment and releases the host port.
    let out = mesh.ok(&["delete", "-f", &gw]);
    assert!(out.contains("pod/edge-istio-0 (shop) deleted"), "{out}");
    assert!(!mesh.ok(&["pods"]).contains("edge-istio-0"));
    let gone = mesh.meshctl(&["service-url", "edge-istio", "-n", "shop"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "host port {addr} still listening"
    );
}
