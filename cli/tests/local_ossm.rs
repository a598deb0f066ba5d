//! An OpenShift Service Mesh 2.x setup on `meshctl local`: a `maistra.io/v2`
//! ServiceMeshControlPlane (REGISTRY_ONLY, JSON access log on stdout, Jaeger
//! tracing, an ingress gateway, Kiali and Grafana add-ons) applied with the
//! apps, a Gateway/VirtualService, and a ServiceEntry with `exportTo`. From the
//! host the ingress gateway answers; an unregistered external address is
//! refused (502, Istio's BlackHole); the ServiceEntry host works; the access
//! log line is JSON on the client's proxy stdout; a live SMCP edit to
//! ALLOW_ANY lets the unregistered call through. The add-ons are reported as
//! not applied. The shop is written as OSSM users write it: no namespace
//! label, a ServiceMeshMemberRoll listing it, pods opting in with
//! `sidecar.istio.io/inject: "true"`; a pod there without it gets no sidecar.

mod common;

use common::external::{service_entry, HOST, PARTNER};
use common::*;

/// The shop as OSSM users write it: no `istio-injection` label on the
/// namespace, each pod opts in.
fn ossm_shop() -> String {
    let opt_in = |app: &str| {
        (
            format!("      labels: {{app: {app}}}\n"),
            format!(
                "      labels: {{app: {app}}}\n      annotations: {{sidecar.istio.io/inject: \"true\"}}\n"
            ),
        )
    };
    let (web, web_in) = opt_in("web");
    let (client, client_in) = opt_in("client");
    let shop = SHOP_WEB_AND_CLIENT
        .replace("  labels: {istio-injection: enabled}\n", "")
        .replace(&web, &web_in)
        .replace(&client, &client_in);
    assert!(!shop.contains("istio-injection") && shop.matches("inject: \"true\"").count() == 2);
    shop
}

/// Besides the shop (web, client) and the unmeshed "external" partner: a
/// member pod that does not opt in, and the ingress Gateway with its
/// VirtualService to web.
const MORE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain, namespace: shop}
spec:
  template:
    metadata:
      labels: {app: plain}
    spec:
      containers:
      - {name: plain, image: example/plain}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gateway, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [\"*\"]
  gateways: [shop-gateway]
  http:
  - route:
    - destination: {host: web.shop.svc.cluster.local, port: {number: 80}}
";

fn smcp(policy: &str) -> String {
    format!(
        "apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {{name: basic, namespace: istio-system}}
spec:
  version: v2.5
  tracing: {{type: Jaeger, sampling: 10000}}
  proxy:
    accessLogging:
      file: {{name: /dev/stdout, encoding: JSON}}
    networking:
      trafficControl:
        outbound: {{policy: {policy}}}
  gateways:
    ingress:
      service: {{type: LoadBalancer}}
    egress: {{enabled: false}}
    openshiftRoute: {{enabled: false}}
  addons:
    kiali: {{enabled: true, name: kiali}}
    grafana: {{enabled: true}}
    jaeger: {{name: jaeger, install: {{storage: {{type: Memory}}}}}}
---
apiVersion: maistra.io/v1
kind: ServiceMeshMemberRoll
metadata: {{name: default, namespace: istio-system}}
spec:
  members: [shop]
"
    )
}

const CLIENT: &str = "shop/client-0";

#[test]
fn an_ossm_control_plane_with_registry_only_json_access_log_and_ingress() {
    let mesh = Local::new();
    let apps = mesh.file(
        "apps.yaml",
        &format!("{}---\n{MORE}---\n{PARTNER}", ossm_shop()),
    );
    let cp = mesh.file("smcp.yaml", &smcp("REGISTRY_ONLY"));
    // No --gateways: the SMCP's ingress gateway is the only one.
    let out = mesh.ok(&["up", "-f", &cp, "-f", &apps]);
    assert!(
        out.contains("spec.addons.kiali is not applied by this mesh")
            && out.contains("spec.addons.jaeger.install is not applied by this mesh"),
        "{out}"
    );
    // Membership: shop is the member; its opted-in pods have sidecars, the
    // one that did not opt in has none; the partner's namespace is no member.
    assert!(
        out.contains("servicemeshmemberroll: members istio-system, shop"),
        "{out}"
    );
    for pod in ["web-0", "client-0"] {
        assert!(
            out.lines()
                .any(|l| l.contains(pod) && l.contains("sidecar injected")),
            "{pod}: {out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.contains("plain-0") && l.contains("no sidecar") && l.contains("NotOptedIn")),
        "{out}"
    );

    // The ingress gateway, from the host.
    let addr = ingress(&mesh, "80");
    let (code, reply, err) = curl(&[&format!("http://{addr}/from-host")]);
    assert_eq!(code, 200, "{err}");
    assert_eq!(reply.expect("the web app's answer").pod, "web-0");

    // REGISTRY_ONLY: an address not in the registry is refused by the sidecar.
    let partner_ip = pod_ip(&mesh, "partner-0");
    let direct = format!("http://{partner_ip}:8080/direct");
    let blocked = mesh.calls(CLIENT, &direct, 2, &[]);
    assert!(
        blocked.iter().all(|(c, r)| *c == 502 && r.is_none()),
        "{blocked:?}"
    );

    // The ServiceEntry host works from its namespace.
    let se = mesh.file("se.yaml", &service_entry(&partner_ip, Some(".")));
    mesh.apply(&se, &[CLIENT]);
    let res = mesh.calls(CLIENT, &format!("http://{HOST}:8080/registered"), 3, &[]);
    for (code, reply) in &res {
        assert_eq!(*code, 200, "{res:?}");
        assert_eq!(reply.as_ref().unwrap().pod, "partner-0");
    }

    // The access log: one JSON object per request on the proxy's stdout.
    for l in mesh.proxy_log_lines(CLIENT, "/registered?call=", 3) {
        let v: serde_json::Value =
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert_eq!(v["method"], "GET", "{l}");
        assert_eq!(v["response_code"], 200, "{l}");
    }

    // A live SMCP edit: ALLOW_ANY lets the unregistered address through.
    let allow = mesh.file("smcp-allow.yaml", &smcp("ALLOW_ANY"));
    mesh.apply(&allow, &[CLIENT]);
    let res = mesh.calls(CLIENT, &direct, 2, &[]);
    assert!(
        res.iter()
            .all(|(c, r)| *c == 200 && r.as_ref().is_some_and(|r| r.pod == "partner-0")),
        "{res:?}"
    );

    // Deleting the SMCP puts the mesh config given at `up` (none) back.
    mesh.change("delete", &allow, &[CLIENT]);
    let cfg = std::fs::read_to_string(mesh.root.join(&mesh.name).join("mesh.yaml")).unwrap();
    assert!(
        !cfg.contains("accessLogFile") && !cfg.contains("ServiceMeshControlPlane"),
        "{cfg}"
    );
}
