//! The Kubernetes Gateway API on `meshctl local`, translated by the agent into
//! Istio config: (a) GAMMA — an HTTPRoute whose parent is the `reviews` Service
//! splits a client's calls by header between per-version Services, observed in
//! the echo app's answers; (b) ingress — a Gateway API Gateway bound to local
//! mode's existing `istio-ingressgateway` by a `Hostname` address, an HTTPRoute
//! with a path match and a RequestHeaderModifier, curled from the host, and a
//! prefix-replacing https redirect; a rule
//! whose backend Service does not exist answers 500 and the route's status (the
//! agent's `/debug/gatewayapiz`) says ResolvedRefs=False BackendNotFound.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT: &str = "productpage-v1-0";
const GATEWAY: &str = "istio-system/istio-ingressgateway-0";

/// Per-version Services for reviews (Gateway API backends are Services, not subsets).
const REVIEWS_VERSIONS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: reviews-v1, namespace: default}
spec:
  selector: {app: reviews, version: v1}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2, namespace: default}
spec:
  selector: {app: reviews, version: v2}
  ports: [{name: http, port: 9080}]
";

/// GET a JSON document from the agent's debug port (loopback in the node).
fn agent_json(mesh: &Local, path: &str) -> serde_json::Value {
    let url = format!("http://127.0.0.1:15014{path}");
    let out = Command::new("ip")
        .args(["netns", "exec", &mesh.node_netns()])
        .args(["curl", "-sS", "--max-time", "5", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("agent JSON")
}

/// The agent's computed Gateway API statuses (`Kind/ns/name` → status).
fn statuses(mesh: &Local) -> serde_json::Value {
    agent_json(mesh, "/debug/gatewayapiz")
}

/// Waits (bounded) until the agent's statuses satisfy `ready` and every proxy
/// acknowledged the snapshot they came from: applied files may arrive in
/// several config versions.
fn wait_applied(mesh: &Local, ready: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Statuses read before syncz: the acknowledged snapshot includes them.
        let s = statuses(mesh);
        let sync = agent_json(mesh, "/debug/syncz");
        let version = sync["version"].as_u64().unwrap_or(0);
        let acked = sync["proxies"].as_array().is_some_and(|p| {
            p.iter()
                .all(|p| p["versionAcked"].as_u64() >= Some(version))
        });
        if ready(&s) && acked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not applied within 15s: {s} {sync}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (status, reason) of condition `type_` of parent `i` of route `key`.
fn route_condition(s: &serde_json::Value, key: &str, type_: &str) -> (String, String) {
    let c = s[key]["parents"][0]["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no status for {key}: {s}"))
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} in {s}"))
        .clone();
    (
        c["status"].as_str().unwrap().into(),
        c["reason"].as_str().unwrap().into(),
    )
}

#[test]
fn gamma_http_route_splits_reviews_by_header() {
    let mesh = Local::up(&["-f", &sample("platform")]);
    // One apply (one config change to wait for): the Services and the route.
    let route = mesh.file(
        "route.yaml",
        &format!(
            "{REVIEWS_VERSIONS}---\napiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reviews, namespace: default}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: reviews, port: 9080}}]
  rules:
  - matches: [{{headers: [{{name: end-user, value: jason}}]}}]
    backendRefs: [{{name: reviews-v2, port: 9080}}]
  - backendRefs: [{{name: reviews-v1, port: 9080}}]
"
        ),
    );
    mesh.apply(&route, &[CLIENT]);
    wait_applied(&mesh, |s| {
        s["HTTPRoute/default/reviews"]["parents"][0]["conditions"][1]["status"] == "True"
    });
    let url = "http://reviews:9080/reviews/0";
    let jason = mesh.calls(CLIENT, url, 20, &["-H", "end-user: jason"]);
    assert_eq!(
        versions(&jason),
        [("v2".to_string(), 20)].into(),
        "{jason:?}"
    );
    let others = mesh.calls(CLIENT, url, 20, &[]);
    assert_eq!(
        versions(&others),
        [("v1".to_string(), 20)].into(),
        "{others:?}"
    );
    let s = statuses(&mesh);
    assert_eq!(
        route_condition(&s, "HTTPRoute/default/reviews", "Accepted"),
        ("True".into(), "Accepted".into())
    );
    // The client's routes name the generated VirtualService.
    let routes = mesh.ok(&["proxy-config", "routes", CLIENT]);
    assert!(
        routes.contains("reviews.default.svc.cluster.local.mesh.istio-autogenerated-k8s-gateway"),
        "{routes}"
    );
}

#[test]
fn gateway_api_gateway_on_the_existing_ingress_gateway() {
    let mesh = Local::up(&["--gateways", "ingress", "-f", &sample("platform")]);
    let cfg = mesh.file(
        "gw.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo, namespace: default}
spec:
  gatewayClassName: istio
  addresses: [{type: Hostname, value: istio-ingressgateway.istio-system.svc.cluster.local}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo, namespace: default}
spec:
  parentRefs: [{name: bookinfo}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /productpage}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-gateway-api, value: translated}]}
    backendRefs: [{name: productpage, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: default}
spec:
  parentRefs: [{name: bookinfo}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: nothere, port: 80}]
",
    );
    mesh.apply(&cfg, &[GATEWAY]);
    wait_applied(&mesh, |s| {
        s["Gateway.gateway.networking.k8s.io/default/bookinfo"]["listeners"][0]["attachedRoutes"]
            == 2
    });
    let addr = ingress(&mesh, "80");
    let (code, reply, err) = curl(&[&format!("http://{addr}/productpage/x")]);
    assert_eq!(code, 200, "{err}");
    let reply = reply.expect("productpage's echo answer");
    assert_eq!(reply.pod, "productpage-v1-0");
    assert_eq!(reply.path, "/productpage/x");
    assert_eq!(
        reply.headers.get("x-gateway-api").map(String::as_str),
        Some("translated")
    );
    // Segment-aware prefix: /productpagex is not /productpage.
    let (code, _, _) = curl(&[&format!("http://{addr}/productpagex")]);
    assert_eq!(code, 404);
    // A redirect to https replacing the matched prefix; the scheme's default
    // port is left out of the Location (the request named the published port).
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-"])
        .arg(format!("http://{addr}/old/page?q=1"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 302"), "{head}");
    let host = addr.split(':').next().unwrap();
    assert!(
        head.contains(&format!("location: https://{host}/new/page?q=1\r\n")),
        "{head}"
    );
    // A backend that does not exist: 500, and the status says why.
    let (code, reply, _) = curl(&[&format!("http://{addr}/missing")]);
    assert_eq!((code, reply.is_none()), (500, true));
    let s = statuses(&mesh);
    assert_eq!(
        route_condition(&s, "HTTPRoute/default/broken", "ResolvedRefs"),
        ("False".into(), "BackendNotFound".into())
    );
    assert_eq!(
        route_condition(&s, "HTTPRoute/default/bookinfo", "ResolvedRefs"),
        ("True".into(), "ResolvedRefs".into())
    );
    let gw = &s["Gateway.gateway.networking.k8s.io/default/bookinfo"];
    assert_eq!(gw["listeners"][0]["attachedRoutes"], 2, "{gw}");
    assert!(
        gw["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True"),
        "{gw}"
    );
}
