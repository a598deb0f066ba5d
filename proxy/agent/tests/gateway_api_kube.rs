//! The agent's Gateway API controller against the in-process fake API server:
//! a Gateway of class `istio` gets its `<name>-istio` ServiceAccount,
//! Deployment and Service (labels, ports, owner), the GatewayClasses `istio`
//! and `mesh` are created when missing (a user's kept) and reported Accepted,
//! a class change moves the objects, deleting the Gateway deletes them, and an
//! object of that name someone else made is left alone. The status writer
//! writes what the snapshots compute, keeps the time of unchanged conditions,
//! writes nothing for an unchanged snapshot, and retries an object that is not
//! there yet. And the `mesh-agent` binary in Kubernetes mode runs it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_agent::compile::Snapshot;
use mesh_agent::gwcontroller::GatewayController;
use mesh_api::resource::ResourceKey;
use mesh_e2e::fake_api::*;
use mesh_e2e::wait::{eventually, eventually_blocking};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const GW: &str = "Gateway.gateway.networking.k8s.io";
const LIMIT: Duration = Duration::from_secs(20);

fn gateway(name: &str, class: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
        "spec": {
            "gatewayClassName": class,
            "infrastructure": {"labels": {"team": "storefront"}},
            "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "https", "port": 443, "protocol": "HTTPS",
                 "tls": {"certificateRefs": [{"name": "cert"}]}},
            ],
        },
    })
}

fn accepted(fake: &Fake, class: &str) -> bool {
    fake.get("GatewayClass", "", class).is_some_and(|c| {
        c["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Accepted" && c["status"] == "True")
        })
    })
}

fn deployed(fake: &Fake, name: &str) -> bool {
    ["ServiceAccount", "Deployment", "Service"]
        .iter()
        .all(|k| fake.get(k, "shop", name).is_some())
}

fn gone(fake: &Fake, name: &str) -> bool {
    ["ServiceAccount", "Deployment", "Service"]
        .iter()
        .all(|k| fake.get(k, "shop", name).is_none())
}

fn start(kube: kube::Client, shutdown: &CancellationToken) -> watch::Sender<Arc<Snapshot>> {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    GatewayController {
        client: kube,
        retry: Duration::from_millis(100),
    }
    .start(rx, shutdown.clone());
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_deployed_classes_accepted_objects_follow_the_gateway() {
    let fake = Fake::new();
    // The user's own `mesh` class: kept as it is (only its status is ours).
    fake.apply(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "mesh"},
        "spec": {"controllerName": "istio.io/gateway-controller", "description": "mine"}}),
    );
    // A Service named like a generated one that the controller did not make.
    fake.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "other-istio", "namespace": "shop"},
        "spec": {"type": "ClusterIP", "ports": [{"name": "web", "port": 8080}]}}));
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let kube = fake.serve(shutdown.clone()).await;
    let _snapshots = start(kube, &shutdown);

    eventually(
        "GatewayClasses istio and mesh accepted",
        LIMIT,
        async || accepted(&fake, "istio") && accepted(&fake, "mesh"),
    )
    .await;
    let istio = fake.get("GatewayClass", "", "istio").unwrap();
    assert_eq!(
        istio["spec"]["controllerName"],
        "istio.io/gateway-controller"
    );
    let mesh = fake.get("GatewayClass", "", "mesh").unwrap();
    assert_eq!(mesh["spec"]["description"], "mine", "{mesh}");
    let cond = &mesh["status"]["conditions"][0];
    assert_eq!(cond["reason"], "Accepted");
    assert_eq!(cond["observedGeneration"], 1);
    assert!(cond["lastTransitionTime"].is_string(), "{cond}");

    fake.apply(gateway("web", "istio"));
    fake.apply(gateway("other", "istio"));
    fake.apply(gateway("foreign", "cilium"));
    eventually("web-istio deployed", LIMIT, async || {
        deployed(&fake, "web-istio")
    })
    .await;
    let dep = fake.get("Deployment", "shop", "web-istio").unwrap();
    let labels = &dep["metadata"]["labels"];
    assert_eq!(labels["gateway.networking.k8s.io/gateway-name"], "web");
    assert_eq!(
        labels["gateway.networking.k8s.io/gateway-class-name"],
        "istio"
    );
    assert_eq!(
        labels["gateway.istio.io/managed"],
        "istio.io-gateway-controller"
    );
    assert_eq!(labels["team"], "storefront");
    assert_eq!(
        dep["metadata"]["ownerReferences"],
        json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "name": "web", "uid": "uid-web", "controller": true}])
    );
    let pod = &dep["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["inject.istio.io/templates"],
        "gateway"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "web-istio");
    let svc = fake.get("Service", "shop", "web-istio").unwrap();
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(
        svc["spec"]["selector"],
        json!({"gateway.networking.k8s.io/gateway-name": "web"})
    );
    let ports: Vec<(String, u64, u64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap();
            (
                p["name"].as_str().unwrap().into(),
                n("port"),
                n("targetPort"),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("status-port".into(), 15021, 15021),
            ("http".into(), 80, 80),
            ("https".into(), 443, 443)
        ]
    );
    // Written by server-side apply under the controller's field manager.
    assert!(fake.requests().iter().any(|r| r.method == "PATCH"
        && r.uri.contains("/deployments/web-istio")
        && r.uri.contains("fieldManager=mesh-agent-gateway-api")));

    eventually("other-istio Deployment", LIMIT, async || {
        fake.get("Deployment", "shop", "other-istio").is_some()
    })
    .await;
    let theirs = fake.get("Service", "shop", "other-istio").unwrap();
    assert!(
        theirs["metadata"]["labels"].is_null(),
        "left alone: {theirs}"
    );
    assert!(gone(&fake, "foreign-cilium"));

    // A class change: the old objects go, the new ones come.
    fake.apply(gateway("web", "mesh"));
    eventually("web moved to web-mesh", LIMIT, async || {
        deployed(&fake, "web-mesh") && gone(&fake, "web-istio")
    })
    .await;

    // A generated object deleted by someone else comes back (the
    // pass that removed web-istio ended with that removal: nothing else is
    // pending).
    fake.delete("Deployment", "shop", "web-mesh");
    eventually("web-mesh Deployment made again", LIMIT, async || {
        fake.get("Deployment", "shop", "web-mesh").is_some()
    })
    .await;

    // Deleted: what it owned is deleted (no garbage collector here).
    fake.delete(GW, "shop", "web");
    fake.delete(GW, "shop", "other");
    eventually("web-mesh deleted", LIMIT, async || {
        gone(&fake, "web-mesh") && fake.get("Deployment", "shop", "other-istio").is_none()
    })
    .await;
    assert!(
        fake.get("Service", "shop", "other-istio").is_some(),
        "not made by the controller: never deleted"
    );
}

fn key(kind: &str, name: &str) -> ResourceKey {
    ResourceKey {
        kind: kind.into(),
        namespace: "shop".into(),
        name: name.into(),
    }
}

fn snapshot(version: u64, statuses: &[(ResourceKey, Value)]) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        version,
        gateway_api_status: Arc::new(statuses.iter().cloned().collect::<BTreeMap<_, _>>()),
        ..Default::default()
    })
}

fn cond(fake: &Fake, kind: &str, name: &str, type_: &str) -> Option<Value> {
    let o = fake.get(kind, "shop", name)?;
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

fn status_patches(fake: &Fake) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.uri.contains("/gateways/web/status"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writer_writes_changes_and_keeps_unchanged_condition_times() {
    let fake = Fake::new();
    // The class exists (not ours): the deployer adds istio/mesh, no more.
    let mut gw = gateway("web", "other");
    gw["status"] = json!({
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted", "lastTransitionTime": "2020-01-01T00:00:00Z"},
            {"type": "Programmed", "status": "False", "reason": "Pending", "lastTransitionTime": "2020-01-01T00:00:00Z"},
        ],
        "addresses": [{"type": "IPAddress", "value": "192.0.2.1"}],
    });
    fake.apply(gw);
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let kube = fake.serve(shutdown.clone()).await;
    let snapshots = start(kube, &shutdown);

    let accepted =
        json!({"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok"});
    let programmed =
        json!({"type": "Programmed", "status": "True", "reason": "Programmed", "message": "ok"});
    let gw_status = json!({"conditions": [accepted, programmed], "listeners": []});
    let route_status = json!({"parents": [{"parentRef": {"name": "web"},
        "controllerName": "istio.io/gateway-controller",
        "conditions": [accepted]}]});
    let statuses = [
        (key(GW, "web"), gw_status.clone()),
        // Not created yet: retried until it exists.
        (key("HTTPRoute", "shop-route"), route_status.clone()),
    ];
    snapshots.send_replace(snapshot(1, &statuses));
    eventually("Programmed written", LIMIT, async || {
        cond(&fake, GW, "web", "Programmed").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let acc = cond(&fake, GW, "web", "Accepted").unwrap();
    assert_eq!(
        acc["lastTransitionTime"], "2020-01-01T00:00:00Z",
        "unchanged: kept"
    );
    assert_eq!(acc["message"], "ok");
    let prog = cond(&fake, GW, "web", "Programmed").unwrap();
    assert_ne!(prog["lastTransitionTime"], "2020-01-01T00:00:00Z", "{prog}");
    assert!(
        prog["lastTransitionTime"].as_str().unwrap().ends_with('Z'),
        "{prog}"
    );
    let st = fake.get(GW, "shop", "web").unwrap()["status"].clone();
    assert!(
        st.get("addresses").is_none(),
        "the computed status replaces it: {st}"
    );
    assert_eq!(status_patches(&fake), 1);

    // The route appears: the retry writes its status.
    fake.apply(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "shop-route", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "web"}, {"name": "theirs"}]},
        // Another controller's entry: kept beside ours.
        "status": {"parents": [{"parentRef": {"name": "theirs"},
            "controllerName": "example.com/other", "conditions": []}]}}),
    );
    eventually("route status written after a retry", LIMIT, async || {
        fake.get("HTTPRoute", "shop", "shop-route")
            .is_some_and(|r| r["status"]["parents"][0]["conditions"][0]["type"] == "Accepted")
    })
    .await;
    let r = fake.get("HTTPRoute", "shop", "shop-route").unwrap();
    assert_eq!(r["status"]["parents"][0]["parentRef"]["name"], "web");
    assert_eq!(
        r["status"]["parents"][1]["controllerName"],
        "example.com/other"
    );
    assert_eq!(r["status"]["parents"].as_array().unwrap().len(), 2);
    assert!(r["status"]["parents"][0]["conditions"][0]["lastTransitionTime"].is_string());

    // The same statuses again, then a change: only the change is written.
    snapshots.send_replace(snapshot(2, &statuses));
    let mut changed = gw_status.clone();
    changed["conditions"][1]["status"] = json!("False");
    changed["conditions"][1]["reason"] = json!("Invalid");
    snapshots.send_replace(snapshot(3, &[(key(GW, "web"), changed)]));
    eventually("Programmed False written", LIMIT, async || {
        cond(&fake, GW, "web", "Programmed").is_some_and(|c| c["reason"] == "Invalid")
    })
    .await;
    assert_eq!(
        status_patches(&fake),
        2,
        "an unchanged status is not written again"
    );
    let acc = cond(&fake, GW, "web", "Accepted").unwrap();
    assert_eq!(acc["lastTransitionTime"], "2020-01-01T00:00:00Z");
}

#[test]
fn the_agent_binary_in_kubernetes_mode_deploys_gateways() {
    let fake = Fake::new();
    fake.apply(gateway("web", "istio"));
    let api = fake.spawn();
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
            .args(["--source", "kubernetes"])
            .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"])
            .env("KUBECONFIG", api.kubeconfig())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually_blocking("web-istio deployed by the binary", LIMIT, || {
        deployed(&fake, "web-istio") && accepted(&fake, "istio")
    });
    fake.delete(GW, "shop", "web");
    eventually_blocking("web-istio deleted by the binary", LIMIT, || {
        gone(&fake, "web-istio")
    });
}
