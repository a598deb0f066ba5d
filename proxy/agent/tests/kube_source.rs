//! The Kubernetes source against a small in-process fake API server (axum on
//! 127.0.0.1:0) that implements list + watch with resourceVersions, bookmarks and
//! `410 Gone` for expired versions. The same objects as the files fixtures must
//! compile to the same snapshot; changes, deletes and a relist after expiry must
//! leave no gap.

use mesh_agent::compile::{compile, Settings, Snapshot};
use mesh_agent::objects::parse_yaml;
use mesh_agent::server::pipeline;
use mesh_agent::source::kubernetes::KubernetesSource;
use mesh_agent::source::Source;
use mesh_agent::store::{SourceEvent, Store};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use mesh_e2e::fake_api::*;

const MESH: &str = include_str!("fixtures/mesh.yaml");
const ISTIO: &str = include_str!("fixtures/istio.yaml");
const GATEWAY_API: &str = include_str!("fixtures/gatewayapi.yaml");

/// What must agree between sources: services (with endpoints), accepted Istio
/// resources with their specs, and rejections.
fn canonical(s: &Snapshot) -> Value {
    let acc = |l: &[mesh_agent::compile::Accepted]| {
        l.iter().map(|a| format!("{}", a.key)).collect::<Vec<_>>()
    };
    let services: BTreeMap<&String, Value> = s
        .services
        .iter()
        .map(|(k, v)| (k, serde_json::to_value(&**v).unwrap()))
        .collect();
    json!({
        "services": services,
        "vs": acc(&s.virtual_services), "dr": acc(&s.destination_rules), "gw": acc(&s.gateways),
        "sc": acc(&s.sidecars), "pa": acc(&s.peer_authentications), "ap": acc(&s.authorization_policies),
        "vs_specs": s.virtual_services.iter().map(|a| serde_json::to_value(a.vs()).unwrap()).collect::<Vec<_>>(),
        "rejected": s.rejected.iter().map(|r| r.resource.clone()).collect::<Vec<_>>(),
    })
}

async fn until(
    snaps: &mut watch::Receiver<Arc<Snapshot>>,
    what: &str,
    f: impl Fn(&Snapshot) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if f(&snaps.borrow_and_update()) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, snaps.changed()).await.is_err() {
            panic!(
                "timed out waiting for {what}: {:#}",
                canonical(&snaps.borrow())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_matches_files_source_and_survives_expired_watches() {
    let fake = Fake::new();
    for d in docs(MESH)
        .into_iter()
        .chain(docs(ISTIO))
        .chain(docs(GATEWAY_API))
    {
        fake.apply(d);
    }
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let client = fake.serve(shutdown.clone()).await;
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (snap_tx, mut snaps) = watch::channel(Arc::new(Snapshot::default()));
    tokio::spawn(Box::new(KubernetesSource { client }).run(ev_tx, shutdown.clone()));
    tokio::spawn(pipeline::run(
        ev_rx,
        Arc::new(Settings::default()),
        snap_tx,
        Duration::from_millis(30),
        shutdown.clone(),
    ));

    // Same objects through the files path.
    let mut store = Store::default();
    for (origin, text) in [
        ("mesh.yaml", MESH),
        ("istio.yaml", ISTIO),
        ("gatewayapi.yaml", GATEWAY_API),
    ] {
        let (objs, errs) = parse_yaml(text);
        assert!(errs.is_empty());
        store.apply(SourceEvent::Replace {
            origin: origin.into(),
            objects: objs.into_iter().map(|(_, o)| o).collect(),
            errors: vec![],
        });
    }
    let expected = canonical(&compile(&store, &Arc::new(Settings::default()), 1));
    assert_eq!(expected["services"].as_object().unwrap().len(), 4);
    // The Istio Gateway applies next to the Gateway API Gateway of the same name,
    // whose invalid route is rejected the same way by both sources.
    assert_eq!(expected["gw"], json!(["Gateway/shop/edge"]));
    assert_eq!(expected["rejected"], json!(["HTTPRoute/shop/bad"]));
    until(&mut snaps, "same snapshot as the files source", |s| {
        canonical(s) == expected
    })
    .await;
    let lists_after_start = fake.db().lists;
    assert_eq!(
        lists_after_start, 21,
        "one list per kind (14 core and Istio, 7 Gateway API)"
    );

    // Add, modify, delete through watches.
    fake.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop"}, "spec": {"ports": [{"name": "http", "port": 80}]}}));
    until(&mut snaps, "added service", |s| {
        s.services.contains_key("cart.shop.svc.cluster.local")
    })
    .await;
    fake.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop"}, "spec": {"ports": [{"name": "grpc", "port": 81}]}}));
    until(&mut snaps, "modified service", |s| {
        s.services
            .get("cart.shop.svc.cluster.local")
            .is_some_and(|x| x.ports[0].protocol == "GRPC")
    })
    .await;
    fake.delete("Pod", "inventory", "stock-1");
    until(&mut snaps, "pod deleted", |s| {
        s.services["stock.inventory.svc.cluster.local"]
            .endpoints
            .len()
            == 1
    })
    .await;

    // The watch drops while the cluster changes and history is compacted: the
    // watcher gets 410 Gone, relists, and the snapshot catches up with no gap.
    fake.db().partitioned = true;
    fake.delete("VirtualService", "inventory", "stock");
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stock-3", "namespace": "inventory", "labels": {"app": "stock"}}, "spec": {"containers": [{"name": "c", "image": "c"}]}, "status": {"podIP": "10.2.0.33", "conditions": [{"type": "Ready", "status": "True"}]}}));
    fake.compact();
    fake.db().partitioned = false;
    // The healed streams stay open past a bookmark interval before they drop:
    // a stream that missed events must not bookmark past them (the race that
    // once made this test flaky).
    tokio::time::sleep(Duration::from_millis(450)).await;
    fake.drop_watches.send_modify(|g| *g += 1);
    until(&mut snaps, "state after relist", |s| {
        s.virtual_services.is_empty()
            && s.services["stock.inventory.svc.cluster.local"]
                .endpoints
                .iter()
                .map(|e| e.address.as_str())
                .collect::<Vec<_>>()
                == ["10.2.0.33", "10.2.0.8"]
            && s.services.contains_key("cart.shop.svc.cluster.local")
    })
    .await;
    let db = fake.db();
    assert!(db.gone >= 2, "expired watches answered 410 ({})", db.gone);
    assert!(db.lists > lists_after_start, "relisted after 410");
    assert!(db.bookmarks > 0, "bookmarks were requested and served");
}
