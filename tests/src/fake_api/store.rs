//! What the fake API server holds (objects by collection with their
//! resourceVersions, the watch log, tokens, recorded requests) and the
//! operations tests call on it directly. Below the HTTP routes, which read and
//! write it, and the serving code in `mod.rs`, which re-exports it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

/// Collection path of a kind (the API server's URL) and its group/version.
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
        "MutatingWebhookConfiguration" => (
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            "admissionregistration.k8s.io/v1",
        ),
        "ValidatingWebhookConfiguration" => (
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            "admissionregistration.k8s.io/v1",
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
        "ServiceMeshMemberRoll" => (
            "/apis/maistra.io/v1/servicemeshmemberrolls",
            "maistra.io/v1",
        ),
        "ServiceMeshMember" => ("/apis/maistra.io/v1/servicemeshmembers", "maistra.io/v1"),
        "NetworkPolicy" => (
            "/apis/networking.k8s.io/v1/networkpolicies",
            "networking.k8s.io/v1",
        ),
        "Deployment" => ("/apis/apps/v1/deployments", "apps/v1"),
        "PodDisruptionBudget" => ("/apis/policy/v1/poddisruptionbudgets", "policy/v1"),
        "ServiceMeshControlPlane" => (
            "/apis/maistra.io/v2/servicemeshcontrolplanes",
            "maistra.io/v2",
        ),
        // Gateway API: its Gateway is `Gateway.gateway.networking.k8s.io`
        // (see [`kind_of`]), Istio's keeps the plain name.
        "GatewayClass" => (
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses",
            "gateway.networking.k8s.io/v1",
        ),
        "Gateway.gateway.networking.k8s.io" => (
            "/apis/gateway.networking.k8s.io/v1/gateways",
            "gateway.networking.k8s.io/v1",
        ),
        "HTTPRoute" => (
            "/apis/gateway.networking.k8s.io/v1/httproutes",
            "gateway.networking.k8s.io/v1",
        ),
        "ReferenceGrant" => (
            "/apis/gateway.networking.k8s.io/v1beta1/referencegrants",
            "gateway.networking.k8s.io/v1beta1",
        ),
        _ => return None,
    })
}

/// The [`collection`] key of an object: its kind, qualified for the Gateway
/// API `Gateway` (whose plain kind is Istio's).
pub fn kind_of(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let gwapi = obj["apiVersion"]
        .as_str()
        .is_some_and(|a| a.starts_with("gateway.networking.k8s.io/"));
    if kind == "Gateway" && gwapi {
        "Gateway.gateway.networking.k8s.io".into()
    } else {
        kind.into()
    }
}

/// Kinds that live outside namespaces (stored under namespace "").
pub(super) fn cluster_scoped(collection: &str) -> bool {
    collection == "/api/v1/namespaces"
        || collection.contains("/admissionregistration.k8s.io/")
        || collection.ends_with("/gatewayclasses")
}

/// Gateway API kinds have their own collections under their group (a Gateway API
/// `Gateway` is not Istio's `Gateway`), at the version the agent watches.
fn gateway_api_collection(api_version: &str, kind: &str) -> Option<(String, String)> {
    let (group, _) = api_version.split_once('/')?;
    if group != mesh_api::gatewayapi::GROUP {
        return None;
    }
    let version = mesh_api::gatewayapi::versions(kind)?[0];
    let plural = match kind {
        "GatewayClass" => "gatewayclasses".to_string(),
        _ => format!("{}s", kind.to_ascii_lowercase()),
    };
    Some((
        format!("/apis/{group}/{version}/{plural}"),
        format!("{group}/{version}"),
    ))
}

/// The documents of a YAML stream, as JSON (null documents skipped).
pub fn docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// A running Pod as the API server returns it (labels, containers by name).
pub fn pod(ns: &str, name: &str, labels: Value, containers: &[&str]) -> Value {
    let cs: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "x"}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": cs},
        "status": {"phase": "Running", "podIP": "10.1.0.1"},
    })
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path, then `?query` if any.
    pub uri: String,
    pub auth: Option<String>,
    /// What it answered (0 while the answer is being written, for streams).
    pub status: u16,
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
    /// "namespace/pod:port" -> the real process behind a pod's port, as a base
    /// URL (`http://127.0.0.1:8080`) for the proxy subresource; port-forward
    /// dials its host:port.
    pub backends: BTreeMap<String, String>,
    /// Every request, in order.
    pub requests: Vec<Seen>,
    /// GETs of one object by clients whose Authorization starts with the
    /// prefix are held until this many arrived (forces racing reads).
    hold: Option<(String, usize, Arc<tokio::sync::Barrier>)>,
    /// When set, requests without `Authorization: Bearer <token>` get 401.
    pub token: Option<String>,
    /// Collections whose lists are answered only once released (a slow list).
    held_lists: std::collections::BTreeSet<String>,
    /// Collections answered `404` (a CRD that is not installed).
    pub absent: std::collections::BTreeSet<String>,
}

pub struct Fake {
    db: Mutex<Db>,
    pub live: broadcast::Sender<(String, Value)>,
    /// Bumping it ends every open watch (a dropped connection).
    pub drop_watches: watch::Sender<u64>,
    /// How often an open watch that asked for bookmarks gets one.
    pub(crate) bookmark_every: std::time::Duration,
    /// Wakes lists waiting for [`Fake::release_lists`].
    lists_released: tokio::sync::Notify,
}

impl Fake {
    /// A fake that bookmarks open watches every 200 ms (tests wait on them).
    pub fn new() -> Arc<Self> {
        Self::with_bookmarks(std::time::Duration::from_millis(200))
    }

    /// A fake that bookmarks open watches every `every`: the real API server
    /// does so about once a minute, and a benchmark that counts its client's
    /// CPU must not pay for test-speed bookmarks.
    pub fn with_bookmarks(every: std::time::Duration) -> Arc<Self> {
        Arc::new(Fake {
            db: Mutex::default(),
            live: broadcast::channel(4096).0,
            drop_watches: watch::channel(0).0,
            bookmark_every: every,
            lists_released: tokio::sync::Notify::new(),
        })
    }

    pub fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap()
    }

    /// Creates or updates an object, as `kubectl apply` would.
    pub fn apply(&self, mut obj: Value) {
        let kind = obj["kind"].as_str().unwrap().to_string();
        let api = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let Some((path, api_version)) = gateway_api_collection(&api, &kind)
            .or_else(|| collection(&kind).map(|(p, v)| (p.to_string(), v.to_string())))
        else {
            return;
        };
        obj["apiVersion"] = api_version.into(); // served at the storage version
        obj["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply"}]);
        self.store(&path, obj);
    }

    /// Stores `obj` in `path` with the next resourceVersion and tells watchers.
    /// Returns the stored object.
    pub(crate) fn store(&self, path: &str, obj: Value) -> Value {
        let mut db = self.db();
        self.store_locked(&mut db, path, obj)
    }

    /// [`Fake::store`] under a lock the caller holds (check, then write).
    pub(crate) fn store_locked(&self, db: &mut Db, path: &str, mut obj: Value) -> Value {
        let ns = if cluster_scoped(path) {
            String::new()
        } else {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            obj["metadata"]["namespace"] = ns.clone().into();
            ns
        };
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        db.rv += 1;
        obj["metadata"]["resourceVersion"] = db.rv.to_string().into();
        // metadata.generation of custom resources (what their status'
        // observedGeneration answers): 1 at creation, +1 on every spec change.
        if path.contains(".io/") && !path.contains(".k8s.io/")
            || path.contains("/gateway.networking.k8s.io/")
        {
            let before = db
                .objects
                .get(path)
                .and_then(|m| m.get(&(ns.clone(), name.clone())));
            let generation = match before {
                None => 1,
                Some(b) => {
                    let g = b["metadata"]["generation"].as_i64().unwrap_or(1);
                    g + i64::from(b["spec"] != obj["spec"])
                }
            };
            obj["metadata"]["generation"] = generation.into();
        }
        let existed = db
            .objects
            .entry(path.into())
            .or_default()
            .insert((ns, name), obj.clone())
            .is_some();
        let ev = json!({"type": if existed { "MODIFIED" } else { "ADDED" }, "object": obj});
        self.record(db, path, ev);
        obj
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

    /// Tells watchers `obj` (already removed, with a new resourceVersion) is gone.
    pub(crate) fn record_deleted(&self, db: &mut Db, path: &str, obj: Value) {
        self.record(db, path, json!({"type": "DELETED", "object": obj}));
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

    /// The stored object, if any (`ns` is ignored for cluster-scoped kinds).
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let (path, _) = collection(kind)?;
        let ns = if cluster_scoped(path) { "" } else { ns };
        self.db()
            .objects
            .get(path)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
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

    pub(super) fn review(&self, tr: &Value) -> Value {
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

    /// Answers 401 Unauthorized, as the API server does, to every request
    /// that does not carry `token` as its bearer token.
    pub fn require_token(&self, token: &str) {
        self.db().token = Some(token.into());
    }

    /// Requests to `kind`'s collection get `404 NotFound`, as for a custom
    /// resource whose CRD is not installed.
    pub fn without_crd(&self, kind: &str) {
        let (path, _) = collection(kind).unwrap();
        self.db().absent.insert(path.into());
    }

    /// Lists of `kind` wait (they are recorded as they arrive) until
    /// [`Fake::release_lists`]: an API server slow to list one kind.
    pub fn hold_lists(&self, kind: &str) {
        let (path, _) = collection(kind).unwrap();
        self.db().held_lists.insert(path.into());
    }

    /// Answers every held list, and lists from now on at once.
    pub fn release_lists(&self) {
        self.db().held_lists.clear();
        self.lists_released.notify_waiters();
    }

    /// Waits while lists of `path` are held.
    pub(super) async fn lists_held(&self, path: &str) {
        loop {
            let released = self.lists_released.notified();
            if !self.db().held_lists.contains(path) {
                return;
            }
            released.await;
        }
    }

    /// The next `n` GETs of one object by clients whose bearer token starts
    /// with `token_prefix` are each answered only once all `n` have read: they
    /// see the same state, as racing replicas do.
    pub fn hold_gets(&self, token_prefix: &str, n: usize) {
        self.db().hold = Some((
            format!("Bearer {token_prefix}"),
            n,
            Arc::new(tokio::sync::Barrier::new(n)),
        ));
    }

    /// The barrier a GET with `auth` must wait at, if one is armed for it.
    pub(super) fn held(&self, auth: Option<&str>) -> Option<Arc<tokio::sync::Barrier>> {
        let mut db = self.db();
        let (prefix, left, barrier) = db.hold.as_mut()?;
        if !auth.is_some_and(|a| a.starts_with(prefix.as_str())) {
            return None;
        }
        let b = barrier.clone();
        *left -= 1;
        if *left == 0 {
            db.hold = None;
        }
        Some(b)
    }

    /// The recorded requests as "METHOD /path?query" lines. kube-rs writes
    /// `?&key=v` for its first query parameter, shown here as `?key=v`.
    pub fn seen(&self) -> Vec<String> {
        self.db()
            .requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.uri.replacen("?&", "?", 1)))
            .collect()
    }

    /// Every recorded request.
    pub fn requests(&self) -> Vec<Seen> {
        self.db().requests.clone()
    }

    /// The Authorization headers seen, in order.
    pub fn auth(&self) -> Vec<String> {
        self.db()
            .requests
            .iter()
            .filter_map(|r| r.auth.clone())
            .collect()
    }

    /// How many `method` requests to a path starting with `path` got `status`.
    pub fn answered(&self, method: &str, path: &str, status: u16) -> usize {
        self.db()
            .requests
            .iter()
            .filter(|r| r.method == method && r.uri.starts_with(path) && r.status == status)
            .count()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.db().requests.clear();
    }
}
