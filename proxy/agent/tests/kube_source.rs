//! The Kubernetes source against a small in-process fake API server (axum on
//! 127.0.0.1:0) that implements list + watch with resourceVersions, bookmarks and
//! `410 Gone` for expired versions. The same objects as the files fixtures must
//! compile to the same snapshot; changes, deletes and a relist after expiry must
//! leave no gap.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::Uri;
use mesh_agent::compile::{compile, Settings, Snapshot};
use mesh_agent::objects::parse_yaml;
use mesh_agent::server::pipeline;
use mesh_agent::source::kubernetes::KubernetesSource;
use mesh_agent::source::Source;
use mesh_agent::store::{SourceEvent, Store};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

const MESH: &str = include_str!("fixtures/mesh.yaml");
const ISTIO: &str = include_str!("fixtures/istio.yaml");

/// Collection path of a kind (the API server's URL), its group/version and list kind.
fn collection(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "Namespace" => ("/api/v1/namespaces", "v1"),
        "Service" => ("/api/v1/services", "v1"),
        "Pod" => ("/api/v1/pods", "v1"),
        "ServiceAccount" => ("/api/v1/serviceaccounts", "v1"),
        "Secret" => ("/api/v1/secrets", "v1"),
        "EndpointSlice" => (
            "/apis/discovery.k8s.io/v1/endpointslices",
            "discovery.k8s.io/v1",
        ),
        "VirtualService" => (
            "/apis/networking.istio.io/v1/virtualservices",
            "networking.istio.io/v1",
        ),
        "DestinationRule" => (
            "/apis/networking.istio.io/v1/destinationrules",
            "networking.istio.io/v1",
        ),
        "Gateway" => (
            "/apis/networking.istio.io/v1/gateways",
            "networking.istio.io/v1",
        ),
        "ServiceEntry" => (
            "/apis/networking.istio.io/v1/serviceentries",
            "networking.istio.io/v1",
        ),
        "Sidecar" => (
            "/apis/networking.istio.io/v1/sidecars",
            "networking.istio.io/v1",
        ),
        "PeerAuthentication" => (
            "/apis/security.istio.io/v1/peerauthentications",
            "security.istio.io/v1",
        ),
        "AuthorizationPolicy" => (
            "/apis/security.istio.io/v1/authorizationpolicies",
            "security.istio.io/v1",
        ),
        _ => return None,
    })
}

#[derive(Default)]
struct Db {
    rv: u64,
    /// collection -> (namespace, name) -> object
    objects: HashMap<String, BTreeMap<(String, String), Value>>,
    /// Watch events not yet compacted: (rv, collection, event).
    log: Vec<(u64, String, Value)>,
    compacted: u64,
    lists: usize,
    gone: usize,
    bookmarks: usize,
    /// While set, events are recorded but not streamed (a network partition).
    partitioned: bool,
}

struct Fake {
    db: Mutex<Db>,
    live: broadcast::Sender<(String, Value)>,
    /// Bumping it ends every open watch (a dropped connection).
    drop_watches: watch::Sender<u64>,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Fake {
            db: Mutex::default(),
            live: broadcast::channel(4096).0,
            drop_watches: watch::channel(0).0,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap()
    }

    /// Creates or updates an object, as `kubectl apply` would.
    fn apply(&self, mut obj: Value) {
        let kind = obj["kind"].as_str().unwrap().to_string();
        let Some((path, api_version)) = collection(&kind) else {
            return;
        };
        obj["apiVersion"] = api_version.into(); // served at the storage version
        let ns = if kind == "Namespace" {
            String::new()
        } else {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        };
        if kind != "Namespace" {
            obj["metadata"]["namespace"] = ns.clone().into();
        }
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut db = self.db();
        db.rv += 1;
        obj["metadata"]["resourceVersion"] = db.rv.to_string().into();
        obj["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply"}]);
        let existed = db
            .objects
            .entry(path.into())
            .or_default()
            .insert((ns, name), obj.clone())
            .is_some();
        let ev = json!({"type": if existed { "MODIFIED" } else { "ADDED" }, "object": obj});
        self.record(&mut db, path, ev);
    }

    fn delete(&self, kind: &str, ns: &str, name: &str) {
        let (path, _) = collection(kind).unwrap();
        let mut db = self.db();
        db.rv += 1;
        let mut obj = db
            .objects
            .get_mut(path)
            .unwrap()
            .remove(&(ns.into(), name.into()))
            .unwrap();
        obj["metadata"]["resourceVersion"] = db.rv.to_string().into();
        self.record(&mut db, path, json!({"type": "DELETED", "object": obj}));
    }

    fn record(&self, db: &mut Db, path: &str, ev: Value) {
        let rv = db.rv;
        db.log.push((rv, path.into(), ev.clone()));
        if !db.partitioned {
            let _ = self.live.send((path.into(), ev));
        }
    }

    /// Forgets history (etcd compaction): watches from older versions get 410.
    fn compact(&self) {
        let mut db = self.db();
        db.compacted = db.rv;
        db.log.clear();
    }
}

async fn handler(
    State(fake): State<Arc<Fake>>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let path = uri.path().to_string();
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let mut db = fake.db();
        db.lists += 1;
        let items: Vec<Value> = db
            .objects
            .get(&path)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let body = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": db.rv.to_string()}, "items": items});
        return axum::response::Response::new(Body::from(body.to_string()));
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel::<bytes::Bytes>();
    let line = |v: &Value| bytes::Bytes::from(format!("{v}\n"));
    // Subscribe before reading the backlog so nothing falls in between.
    let mut live = fake.live.subscribe();
    {
        let mut db = fake.db();
        if from < db.compacted {
            db.gone += 1;
            let status = json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 410, "reason": "Expired", "message": format!("too old resource version: {from} ({})", db.compacted)}});
            let _ = tx.send(line(&status));
            drop(tx);
            return stream_response(rx);
        }
        for (rv, p, ev) in &db.log {
            if *rv > from && *p == path {
                let _ = tx.send(line(ev));
            }
        }
    }
    let mut dropped = fake.drop_watches.subscribe();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let fake2 = fake.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = dropped.changed() => return,
                ev = live.recv() => match ev {
                    Ok((p, ev)) if p == path => { if tx.send(line(&ev)).is_err() { return } }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let rv = { let mut db = fake2.db(); if db.partitioned { continue } db.bookmarks += 1; db.rv };
                    let bm = json!({"type": "BOOKMARK", "object": {"kind": "Bookmark", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}}});
                    if tx.send(line(&bm)).is_err() { return }
                }
            }
        }
    });
    stream_response(rx)
}

fn stream_response(rx: mpsc::UnboundedReceiver<bytes::Bytes>) -> axum::response::Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    axum::response::Response::new(Body::from_stream(stream))
}

fn docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

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
    for d in docs(MESH).into_iter().chain(docs(ISTIO)) {
        fake.apply(d);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(handler)
        .with_state(fake.clone());
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { sd.cancelled().await })
            .await
    });

    let cfg = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(cfg).unwrap();
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
    for (origin, text) in [("mesh.yaml", MESH), ("istio.yaml", ISTIO)] {
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
    until(&mut snaps, "same snapshot as the files source", |s| {
        canonical(s) == expected
    })
    .await;
    let lists_after_start = fake.db().lists;
    assert_eq!(lists_after_start, 13, "one list per kind");

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
