//! Self-managed mode with two replicas against a small in-process fake Kubernetes
//! API server (Secrets with create/409 AlreadyExists and resourceVersion/409
//! Conflict, webhook configurations with JSON patch): both replicas race to create
//! the Secret, exactly one wins, and both serve the winner's certificate over real
//! TLS; the caBundle of both webhook configurations equals the Secret's `ca.crt`.
//! A near-expiry certificate is rotated by exactly one of two racing replicas,
//! the new bundle keeps the old CA, and both replicas move to the new cert.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use common::net::{eventually, Client};
use mesh_webhook::kubeapi::ApiClient;
use mesh_webhook::selfca::{SelfManaged, WebhookKind};
use mesh_webhook::server::{serve, AppState, Limits};
use mesh_webhook::sharedca::{keep_shared, SharedCa};
use mesh_webhook::tls::{self, CertStore};
use mesh_webhook::MeshConfig;
use serde_json::{json, Value};

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
const SVC_NAME: &str = "mesh-webhook.istio-system.svc";

#[derive(Default)]
struct Fake {
    secrets: Mutex<BTreeMap<String, Value>>,
    configs: Mutex<BTreeMap<String, Value>>,
    rv: Mutex<u64>,
    creates: Mutex<(usize, usize)>,
    replaces: Mutex<(usize, usize)>,
    /// Secret GETs of replicas whose token starts with the prefix are held until
    /// this many have arrived (forces the race).
    gate: Mutex<Option<(String, usize, Arc<tokio::sync::Barrier>)>>,
}

impl Fake {
    fn next_rv(&self) -> String {
        let mut rv = self.rv.lock().unwrap();
        *rv += 1;
        rv.to_string()
    }
    fn arm_race(&self, token_prefix: &str, n: usize) {
        *self.gate.lock().unwrap() = Some((
            format!("Bearer {token_prefix}"),
            n,
            Arc::new(tokio::sync::Barrier::new(n)),
        ));
    }
}

type R = Result<Json<Value>, (StatusCode, String)>;

async fn get_secret(
    State(f): State<Arc<Fake>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> R {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let wait = {
        let mut g = f.gate.lock().unwrap();
        let mut b = None;
        if let Some((prefix, left, barrier)) = g.as_mut() {
            if auth.starts_with(prefix.as_str()) {
                b = Some(barrier.clone());
                *left -= 1;
                if *left == 0 {
                    *g = None;
                }
            }
        }
        b
    };
    // Read first, then wait: both racers see the same state, as two GETs
    // answered before either write would.
    let s = f.secrets.lock().unwrap().get(&name).cloned();
    if let Some(b) = &wait {
        let _ = tokio::time::timeout(Duration::from_secs(5), b.wait()).await;
    }
    s.map(Json)
        .ok_or((StatusCode::NOT_FOUND, format!("secrets {name:?} not found")))
}

async fn create_secret(State(f): State<Arc<Fake>>, Json(mut obj): Json<Value>) -> R {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let mut s = f.secrets.lock().unwrap();
    if s.contains_key(&name) {
        f.creates.lock().unwrap().1 += 1;
        return Err((StatusCode::CONFLICT, "AlreadyExists".into()));
    }
    obj["metadata"]["resourceVersion"] = json!(f.next_rv());
    s.insert(name, obj.clone());
    f.creates.lock().unwrap().0 += 1;
    Ok(Json(obj))
}

async fn replace_secret(
    State(f): State<Arc<Fake>>,
    Path(name): Path<String>,
    Json(mut obj): Json<Value>,
) -> R {
    let mut s = f.secrets.lock().unwrap();
    let cur = s.get(&name).ok_or((StatusCode::NOT_FOUND, name.clone()))?;
    if cur["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"] {
        f.replaces.lock().unwrap().1 += 1;
        return Err((StatusCode::CONFLICT, "the object has been modified".into()));
    }
    obj["metadata"]["resourceVersion"] = json!(f.next_rv());
    s.insert(name, obj.clone());
    f.replaces.lock().unwrap().0 += 1;
    Ok(Json(obj))
}

async fn get_config(State(f): State<Arc<Fake>>, Path((kind, name)): Path<(String, String)>) -> R {
    let c = f
        .configs
        .lock()
        .unwrap()
        .get(&format!("{kind}/{name}"))
        .cloned();
    c.map(Json).ok_or((StatusCode::NOT_FOUND, name))
}

async fn patch_config(
    State(f): State<Arc<Fake>>,
    Path((kind, name)): Path<(String, String)>,
    body: String,
) -> R {
    let patch: json_patch::Patch =
        serde_json::from_str(&body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut c = f.configs.lock().unwrap();
    let obj = c
        .get_mut(&format!("{kind}/{name}"))
        .ok_or((StatusCode::NOT_FOUND, name))?;
    let mut next = obj.clone();
    json_patch::patch(&mut next, &patch).map_err(|e| (StatusCode::CONFLICT, e.to_string()))?;
    next["metadata"]["resourceVersion"] = json!(f.next_rv());
    *obj = next.clone();
    Ok(Json(next))
}

async fn fake_api() -> (Arc<Fake>, u16) {
    let fake = Arc::new(Fake::default());
    for (kind, name, path) in [
        (
            "mutatingwebhookconfigurations",
            "mesh-sidecar-injector",
            "/inject",
        ),
        (
            "validatingwebhookconfigurations",
            "mesh-validator",
            "/validate",
        ),
    ] {
        let hooks: Vec<Value> = (0..2)
            .map(|i| json!({"name": format!("{i}.mesh.istio.io"),
                "clientConfig": {"service": {"name": "mesh-webhook", "namespace": "istio-system", "path": path}}}))
            .collect();
        fake.configs.lock().unwrap().insert(
            format!("{kind}/{name}"),
            json!({"metadata": {"name": name, "resourceVersion": "1"}, "webhooks": hooks}),
        );
    }
    let app = Router::new()
        .route(SECRETS, post(create_secret))
        .route(
            &format!("{SECRETS}/{{name}}"),
            get(get_secret).put(replace_secret),
        )
        .route(
            "/apis/admissionregistration.k8s.io/v1/{kind}/{name}",
            get(get_config).patch(patch_config),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, port)
}

fn secret_field(f: &Fake, key: &str) -> String {
    let s = f.secrets.lock().unwrap()["mesh-webhook-certs"].clone();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s["data"][key].as_str().unwrap())
        .unwrap();
    String::from_utf8(raw).unwrap()
}

fn bundles(f: &Fake) -> Vec<String> {
    f.configs
        .lock()
        .unwrap()
        .values()
        .flat_map(|c| c["webhooks"].as_array().unwrap().clone())
        .map(|w| {
            w["clientConfig"]["caBundle"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn leaf_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// One replica: its own CertStore, HTTPS server and keeper loop.
struct Replica {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn replica(
    token: &str,
    port: u16,
    cfg: &SharedCa,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Replica {
    // Start on a private cert, as a fresh pod does before its first sync.
    let own = SelfManaged::generate("mesh-webhook", "istio-system").unwrap();
    let store = CertStore::new(own.certified_key().unwrap());
    let api = Arc::new(
        ApiClient::from_url(&format!("http://127.0.0.1:{port}"), Some(token.into())).unwrap(),
    );
    keep_shared(
        api,
        cfg.clone(),
        store.clone(),
        None,
        vec![
            (WebhookKind::Mutating, "mesh-sidecar-injector".into()),
            (WebhookKind::Validating, "mesh-validator".into()),
        ],
        Duration::from_millis(100),
        stop,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(MeshConfig::default(), Limits::default());
    tokio::spawn(serve(listener, tls::server_config(store), state, async {
        let _ = rx.await;
    }));
    Replica { addr, _stop: tx }
}

/// Both replicas present the Secret's cert, trusted through the Secret's CA.
async fn both_serve_secret(f: &Arc<Fake>, a: &Replica, b: &Replica) -> bool {
    let (ca, cert) = (secret_field(f, "ca.crt"), secret_field(f, "tls.crt"));
    for r in [a, b] {
        match Client::connect_as(r.addr, &ca, SVC_NAME).await {
            Ok(c) if c.peer_cert == leaf_der(&cert) => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_ca_through_the_secret_and_rotate_once() {
    let (fake, port) = fake_api().await;
    let mut cfg = SharedCa::new("istio-system", "mesh-webhook-certs", "mesh-webhook");
    cfg.lifetime = Duration::from_secs(3600);
    cfg.renew_before = Duration::from_secs(600);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);

    fake.arm_race("first-", 2);
    let a = replica("first-a", port, &cfg, stop.clone()).await;
    let b = replica("first-b", port, &cfg, stop.clone()).await;
    let f = fake.clone();
    let (ra, rb) = (&a, &b);
    assert!(
        eventually(10, || {
            let f = f.clone();
            async move {
                f.secrets.lock().unwrap().contains_key("mesh-webhook-certs")
                    && both_serve_secret(&f, ra, rb).await
            }
        })
        .await,
        "replicas never converged on the Secret's cert"
    );
    assert_eq!(
        *fake.creates.lock().unwrap(),
        (1, 1),
        "one create won, one got 409"
    );
    let want = base64::engine::general_purpose::STANDARD.encode(secret_field(&fake, "ca.crt"));
    let f = fake.clone();
    assert!(
        eventually(5, || {
            let (f, w) = (f.clone(), want.clone());
            async move { bundles(&f).iter().all(|b| *b == w) }
        })
        .await,
        "caBundle is not the Secret's CA: {:?}",
        bundles(&fake)
    );
    assert_eq!(bundles(&fake).len(), 4);

    // Rotation: both replicas find the cert near expiry at once (renewal window
    // longer than its life); exactly one replace wins, the other gets 409.
    let old_ca = secret_field(&fake, "ca.crt");
    let old_cert = secret_field(&fake, "tls.crt");
    let _ = stop_tx.send(true);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut near = cfg.clone();
    near.renew_before = Duration::from_secs(4000);
    near.lifetime = Duration::from_secs(7200);
    fake.arm_race("second-", 2);
    let a = replica("second-a", port, &near, stop.clone()).await;
    let b = replica("second-b", port, &near, stop.clone()).await;
    let f = fake.clone();
    let (ra, rb) = (&a, &b);
    let oc = old_cert.clone();
    assert!(
        eventually(10, || {
            let (f, oc) = (f.clone(), oc.clone());
            async move { secret_field(&f, "tls.crt") != oc && both_serve_secret(&f, ra, rb).await }
        })
        .await,
        "replicas never moved to the rotated cert"
    );
    assert_eq!(
        *fake.replaces.lock().unwrap(),
        (1, 1),
        "one rotation won, one got 409"
    );
    let new_ca = secret_field(&fake, "ca.crt");
    assert!(
        new_ca.ends_with(&old_ca),
        "old CA kept in the bundle during the overlap"
    );
    assert!(new_ca.len() > old_ca.len());
    let want = base64::engine::general_purpose::STANDARD.encode(&new_ca);
    let f = fake.clone();
    assert!(
        eventually(5, || {
            let (f, w) = (f.clone(), want.clone());
            async move { bundles(&f).iter().all(|b| *b == w) }
        })
        .await
    );
    // A cert the old CA signed is still trusted by the published bundle.
    assert!(Client::connect_as(a.addr, &new_ca, SVC_NAME).await.is_ok());
    let _ = stop_tx.send(true);
}
