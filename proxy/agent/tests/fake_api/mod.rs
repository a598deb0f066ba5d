//! A small in-process fake Kubernetes API server (axum on 127.0.0.1:0) shared
//! by the Kubernetes tests: list + watch with resourceVersions, bookmarks and
//! `410 Gone` for expired versions, server-side apply (PATCH) of
//! namespaced objects, and TokenReviews (POST) of the tokens a test registers:
//! anything else, an expired token included, is not authenticated.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Method, Uri};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Collection path of a kind (the API server's URL), its group/version and list kind.
pub fn collection(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "Namespace" => ("/api/v1/namespaces", "v1"),
        "Service" => ("/api/v1/services", "v1"),
        "Pod" => ("/api/v1/pods", "v1"),
        "ServiceAccount" => ("/api/v1/serviceaccounts", "v1"),
        "Secret" => ("/api/v1/secrets", "v1"),
        "ConfigMap" => ("/api/v1/configmaps", "v1"),
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

/// The documents of a YAML stream, as JSON (null documents skipped).
pub fn docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

#[derive(Default)]
pub struct Db {
    pub rv: u64,
    /// collection -> (namespace, name) -> object
    pub objects: HashMap<String, BTreeMap<(String, String), Value>>,
    /// Watch events not yet compacted: (rv, collection, event).
    pub log: Vec<(u64, String, Value)>,
    pub compacted: u64,
    pub lists: usize,
    pub gone: usize,
    pub bookmarks: usize,
    /// While set, events are recorded but not streamed (a network partition).
    pub partitioned: bool,
    /// collection -> newest event that open streams did not get (partition).
    pub missed: HashMap<String, u64>,
    /// token -> the TokenReview status the API server answers for it.
    pub tokens: HashMap<String, Value>,
    /// TokenReviews answered.
    pub reviews: usize,
}

pub struct Fake {
    db: Mutex<Db>,
    pub live: broadcast::Sender<(String, Value)>,
    /// Bumping it ends every open watch (a dropped connection).
    pub drop_watches: watch::Sender<u64>,
}

impl Fake {
    pub fn new() -> Arc<Self> {
        Arc::new(Fake {
            db: Mutex::default(),
            live: broadcast::channel(4096).0,
            drop_watches: watch::channel(0).0,
        })
    }

    pub fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap()
    }

    /// Creates or updates an object, as `kubectl apply` would.
    pub fn apply(&self, mut obj: Value) {
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

    pub fn delete(&self, kind: &str, ns: &str, name: &str) {
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
        if db.partitioned {
            db.missed.insert(path.into(), rv);
        } else {
            let _ = self.live.send((path.into(), ev));
        }
    }

    /// A valid projected token of `ns`/`sa` (for the audience the review asks).
    pub fn sa_token(&self, token: &str, ns: &str, sa: &str) {
        self.token_status(
            token,
            json!({"authenticated": true, "user": {"username": format!("system:serviceaccount:{ns}:{sa}")}}),
        );
    }

    /// A token that was valid once and has expired: kube-apiserver answers
    /// "not authenticated" with the JWT validation error.
    pub fn expired_token(&self, token: &str) {
        self.token_status(
            token,
            json!({"authenticated": false, "error": "[invalid bearer token, service account token has expired]"}),
        );
    }

    /// The status reviewing `token` answers (`audiences` absent: those asked).
    pub fn token_status(&self, token: &str, status: Value) {
        self.db().tokens.insert(token.into(), status);
    }

    fn review(&self, tr: &Value) -> Value {
        let token = tr["spec"]["token"].as_str().unwrap_or_default();
        let mut db = self.db();
        db.reviews += 1;
        let mut status =
            db.tokens.get(token).cloned().unwrap_or_else(
                || json!({"authenticated": false, "error": "invalid bearer token"}),
            );
        if status["authenticated"] == true && status.get("audiences").is_none() {
            status["audiences"] = tr["spec"]["audiences"].clone();
        }
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": tr["spec"],
            "status": status,
        })
    }

    /// Forgets history (etcd compaction): watches from older versions get 410.
    pub fn compact(&self) {
        let mut db = self.db();
        db.compacted = db.rv;
        db.log.clear();
    }
}

pub async fn handler(
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
    let mut backlog_rv = from;
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
                backlog_rv = *rv;
            }
        }
    }
    let mut dropped = fake.drop_watches.subscribe();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let fake2 = fake.clone();
    let event_rv = |ev: &Value| -> u64 {
        ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    tokio::spawn(async move {
        // Newest version this stream has delivered; a bookmark may only claim
        // a version once every event of this collection up to it was sent
        // (the API server's guarantee), so a stream that missed events during
        // a partition never bookmarks past them.
        let mut delivered = backlog_rv;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = dropped.changed() => return,
                ev = live.recv() => match ev {
                    // Skips what the backlog already sent.
                    Ok((p, ev)) if p == path && event_rv(&ev) > delivered => {
                        delivered = event_rv(&ev);
                        if tx.send(line(&ev)).is_err() { return }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let mut out = Vec::new();
                    let rv = {
                        let mut db = fake2.db();
                        if db.partitioned { continue }
                        // Under the lock every recorded event is already in
                        // the channel: send those first, then the bookmark.
                        while let Ok((p, ev)) = live.try_recv() {
                            if p == path && event_rv(&ev) > delivered {
                                delivered = event_rv(&ev);
                                out.push(ev);
                            }
                        }
                        if db.missed.get(&path).is_some_and(|m| *m > delivered) { None } else {
                            db.bookmarks += 1;
                            Some(db.rv)
                        }
                    };
                    for ev in out {
                        if tx.send(line(&ev)).is_err() { return }
                    }
                    let Some(rv) = rv else { continue };
                    let bm = json!({"type": "BOOKMARK", "object": {"kind": "Bookmark", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}}});
                    if tx.send(line(&bm)).is_err() { return }
                }
            }
        }
    });
    stream_response(rx)
}

pub fn stream_response(rx: mpsc::UnboundedReceiver<bytes::Bytes>) -> axum::response::Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    axum::response::Response::new(Body::from_stream(stream))
}

impl Fake {
    /// The stored object, if any.
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let (path, _) = collection(kind)?;
        self.db()
            .objects
            .get(path)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Serves on 127.0.0.1:0 until `shutdown`; returns a client for it.
    pub async fn serve(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> kube::Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(route).with_state(self.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        });
        let cfg = kube::Config::new(format!("http://{addr}").parse().unwrap());
        kube::Client::try_from(cfg).unwrap()
    }
}

/// Server-side apply (`PATCH /api/v1/namespaces/<ns>/<plural>/<name>`) stores
/// the applied object; everything else is a list or watch ([`handler`]).
pub async fn route(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    q: Query<HashMap<String, String>>,
    body: bytes::Bytes,
) -> axum::response::Response {
    if method == Method::POST && uri.path() == "/apis/authentication.k8s.io/v1/tokenreviews" {
        let tr = serde_json::from_slice::<Value>(&body).unwrap_or_default();
        return axum::response::Response::new(Body::from(fake.review(&tr).to_string()));
    }
    if method != Method::PATCH {
        return handler(State(fake), uri, q).await;
    }
    let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
        let mut r = axum::response::Response::new(Body::from("bad patch"));
        *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        return r;
    };
    let parts: Vec<&str> = uri.path().split('/').collect();
    // ["", "api", "v1", "namespaces", ns, plural, name]
    if let [_, _, _, "namespaces", ns, _, name] = parts.as_slice() {
        obj["metadata"]["namespace"] = (*ns).into();
        obj["metadata"]["name"] = (*name).into();
    }
    fake.apply(obj.clone());
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stored = fake.get(&kind, &ns, &name).unwrap_or(obj);
    axum::response::Response::new(Body::from(stored.to_string()))
}
