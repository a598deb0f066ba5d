//! meshctl against a Kubernetes cluster: the real `meshctl` binary, configured by
//! a `KUBECONFIG` file only, talks to an in-process fake API server whose
//! port-forward subresource (WebSocket, as kube-rs speaks it to a real one)
//! bridges to a real `mesh-proxy` admin bound to 127.0.0.1 only (subscribed to a
//! real `mesh-agent`) and that agent's loopback debug port, and whose pod proxy
//! subresource reaches a real `mesh-webhook`. The output must show what those
//! processes really have, errors must name pod and port, and the fake must have
//! seen the exact API paths (port-forward, never the proxy subresource, for the
//! loopback-only ports).

mod procs;

use mesh_e2e::fake_api::{pod, Fake, Threaded};
use procs::*;
use serde_json::json;

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: shop, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: reviews}]}
status: {podIP: 10.1.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
"#;

/// A real agent over MESH, a real proxy (shop/web-0) subscribed to it, and the
/// fake API server knowing them as pods.
struct World {
    api: Threaded,
    admin: String,
    _procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let (agent, sync, debug) = agent(dir.path());
    let (proxy, admin, prometheus) = proxy(&["--agent", &sync]);
    let fake = Fake::new();
    let add = |p: serde_json::Value| fake.apply(p);
    add(pod(
        "shop",
        "web-0",
        json!({"app": "web"}),
        &["web", "istio-proxy"],
    ));
    add(pod("shop", "plain-0", json!({"app": "plain"}), &["plain"]));
    add(pod(
        "istio-system",
        "mesh-agent-7f9c",
        json!({"app": "mesh-agent"}),
        &["mesh-agent"],
    ));
    let mut db = fake.db();
    db.backends
        .insert("shop/web-0:15000".into(), format!("http://{admin}"));
    db.backends
        .insert("shop/web-0:15090".into(), format!("http://{prometheus}"));
    db.backends.insert(
        "istio-system/mesh-agent-7f9c:15014".into(),
        format!("http://{debug}"),
    );
    drop(db);
    World {
        api: fake.spawn(),
        admin,
        _procs: vec![agent, proxy],
        _dir: dir,
    }
}

#[test]
fn proxy_config_and_status_through_the_api_server() {
    let w = world();
    let kc = w.api.kubeconfig();
    let fq = "reviews.shop.svc.cluster.local";

    // The pod's clusters, as the real proxy compiled them from the agent's push.
    let out = until(&kc, &["proxy-config", "cluster", "web-0.shop"], |o| {
        o.contains(" v1 ")
    });
    let (_, direct, _) = meshctl(&kc, &["proxy-config", "cluster", &w.admin]);
    assert_eq!(
        out, direct,
        "same table through the API as from the admin port"
    );
    assert!(out.starts_with("SERVICE FQDN"), "{out}");
    for want in [fq, "BlackHoleCluster", "PassthroughCluster"] {
        assert!(out.contains(want), "{want} in\n{out}");
    }
    let seen = w.api.seen();
    assert!(
        seen.contains(&"GET /api/v1/namespaces/shop/pods/web-0".into()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"GET /api/v1/namespaces/shop/pods/web-0/portforward?ports=15000".into()),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.contains("/proxy")), "{seen:?}");
    assert!(w.api.auth().iter().all(|a| a == "Bearer test-token"));

    // The kubeconfig context's namespace (shop) and -n give the same pod; JSON too.
    w.api.clear();
    let (ok, json_out, err) = meshctl(&kc, &["proxy-config", "endpoint", "web-0", "-o", "json"]);
    assert!(ok, "{err}");
    let eps: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert!(
        eps.as_array()
            .unwrap()
            .iter()
            .any(|e| e["endpoint"] == "10.1.0.1:9080"),
        "{json_out}"
    );
    let (ok, _, err) = meshctl(&kc, &["proxy-config", "route", "web-0", "-n", "shop"]);
    assert!(ok, "{err}");
    assert!(w
        .api
        .seen()
        .iter()
        .all(|s| s.starts_with("GET /api/v1/namespaces/shop/pods/web-0")));

    // secret: no CA here, so no workload certificate; read through /certs.
    w.api.clear();
    let (ok, out, err) = meshctl(&kc, &["proxy-config", "secret", "web-0"]);
    assert!(ok && out.contains("NONE (mTLS off"), "{out}{err}");
    // Two admin reads, each through its own port-forward: `/certs`, then
    // `/config_dump` for a gateway's server certificates (none on a sidecar).
    let one = [
        "GET /api/v1/namespaces/shop/pods/web-0",
        "GET /api/v1/namespaces/shop/pods/web-0/portforward?ports=15000",
    ];
    assert_eq!(w.api.seen(), [one, one].concat());

    // A missing pod: the API's 404, naming it.
    let (ok, _, err) = meshctl(&kc, &["proxy-config", "cluster", "nope-0.shop"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("pod shop/nope-0: not found") && err.contains("pods \"nope-0\" not found"),
        "{err}"
    );
    // A pod without a sidecar: said so, and its port never asked.
    w.api.clear();
    let (ok, _, err) = meshctl(&kc, &["proxy-config", "listener", "plain-0"]);
    assert!(
        !ok && err.contains("pod shop/plain-0 has no istio-proxy container"),
        "{err}"
    );
    assert_eq!(w.api.seen(), ["GET /api/v1/namespaces/shop/pods/plain-0"]);

    // proxy-status: the agent pods by label, each one's syncz through the API.
    w.api.clear();
    let out = until(&kc, &["proxy-status"], |o| o.contains("SYNCED"));
    let row = out
        .lines()
        .find(|l| l.starts_with("web-0 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains(" shop ") && row.ends_with("SYNCED"), "{out}");
    let seen = w.api.seen();
    assert!(
        seen.contains(
            &"GET /api/v1/namespaces/istio-system/pods?labelSelector=app%3Dmesh-agent".into()
        ),
        "{seen:?}"
    );
    assert!(
        seen.contains(
            &"GET /api/v1/namespaces/istio-system/pods/mesh-agent-7f9c/portforward?ports=15014"
                .into()
        ),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.contains("/proxy")), "{seen:?}");
}

#[test]
fn a_forwarded_port_with_nothing_listening_is_reported_with_pod_and_port() {
    // A sidecar pod whose admin port has nothing listening: the fake really dials
    // a closed loopback port and, like the kubelet, sends the refusal on the
    // port's error channel; meshctl names pod and port and passes the reason on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let fake = Fake::new();
    fake.apply(pod("shop", "dark-0", json!({}), &["app", "istio-proxy"]));
    fake.db()
        .backends
        .insert("shop/dark-0:15000".into(), format!("http://{closed_addr}"));
    let api = fake.spawn();
    let (ok, out, err) = meshctl(&api.kubeconfig(), &["proxy-config", "cluster", "dark-0"]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("port-forward to pod shop/dark-0 port 15000: error forwarding port 15000")
            && err.contains("connection refused"),
        "{err}"
    );
    assert_eq!(
        api.seen(),
        [
            "GET /api/v1/namespaces/shop/pods/dark-0",
            "GET /api/v1/namespaces/shop/pods/dark-0/portforward?ports=15000"
        ]
    );
}

#[test]
fn version_finds_the_control_plane_and_proxies_in_the_cluster() {
    let w = world();
    let kc = w.api.kubeconfig();
    // A real webhook on a certificate from a throwaway CA (the API server does not
    // verify pod certificates on the proxy subresource, nor does the fake).
    let wh = webhook();
    let webhook = wh.addr.clone();
    {
        w.api.apply(pod(
            "istio-system",
            "mesh-webhook-1",
            json!({"app": "mesh-webhook"}),
            &["mesh-webhook"],
        ));
        w.api.db().backends.insert(
            "istio-system/mesh-webhook-1:15017".into(),
            format!("https://{webhook}"),
        );
    }
    let v = env!("CARGO_PKG_VERSION");
    // The proxy shows up in the data plane once the agent reports it connected.
    let out = until(&kc, &["version"], |o| o.contains("data plane"));
    assert_eq!(
        out,
        format!(
            "client version: {v}\ncontrol plane version: {v}\ndata plane version: {v} (1 proxy)\n"
        )
    );
    let (ok, out, err) = meshctl(&kc, &["version", "-o", "json"]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        j["agents"][0]["address"],
        "pod istio-system/mesh-agent-7f9c"
    );
    assert_eq!(
        j["webhooks"][0]["address"],
        "pod istio-system/mesh-webhook-1"
    );
    assert_eq!(j["webhooks"][0]["version"], v);
    assert_eq!(j["dataPlane"][0]["address"], "pod shop/web-0");
    let seen = w.api.seen();
    for want in [
        "GET /api/v1/namespaces/istio-system/pods/mesh-agent-7f9c/portforward?ports=15014",
        "GET /api/v1/namespaces/istio-system/pods/https:mesh-webhook-1:15017/proxy/version",
        "GET /api/v1/namespaces/shop/pods/web-0/portforward?ports=15000",
    ] {
        assert!(seen.contains(&want.to_string()), "{want} in {seen:?}");
    }
    // Only the webhook (on the pod IP) goes through the proxy subresource.
    assert!(
        seen.iter()
            .filter(|s| s.contains("/proxy"))
            .all(|s| s.contains("mesh-webhook-1")),
        "{seen:?}"
    );
}

#[test]
fn dashboard_scrapes_the_sidecars_through_the_api_server() {
    // web-0's 15090 is the real proxy's; dark-0 is a sidecar pod whose
    // metrics port has nothing behind it; plain-0 has no sidecar.
    let w = world();
    w.api
        .fake
        .apply(pod("default", "dark-0", json!({}), &["app", "istio-proxy"]));
    let (dash, line) = spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(["dashboard", "--port", "0", "--refresh", "0"])
            .env("KUBECONFIG", w.api.kubeconfig())
            .env("HOME", "/nonexistent/home")
            .env_remove("KUBERNETES_SERVICE_HOST"),
    );
    let url = line.trim().strip_prefix("dashboard: ").unwrap_or_default();
    assert!(url.starts_with("http://127.0.0.1:"), "{line:?}");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", url])
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    // One sidecar scraped (the real proxy, through a port-forward), the other
    // named with the kubelet's reason; the pod without a sidecar not tried.
    assert!(
        page.contains("metrics: the sidecars&#39; own (15090), 1 scraped"),
        "{page}"
    );
    assert!(
        page.contains("scraping default/dark-0: port-forward to pod default/dark-0 port 15090"),
        "{page}"
    );
    assert!(!page.contains("plain-0"), "{page}");
    assert!(
        page.contains("traces: none (no collector; pass --zipkin URL)"),
        "{page}"
    );
    let seen = w.api.seen();
    for want in [
        "GET /api/v1/pods?",
        "GET /api/v1/namespaces/shop/pods/web-0/portforward?ports=15090",
        "GET /api/v1/namespaces/default/pods/dark-0/portforward?ports=15090",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} in {seen:?}");
    }
    assert!(!seen.iter().any(|s| s.contains("plain-0")), "{seen:?}");
    drop(dash);
}
