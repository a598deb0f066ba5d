//! Self-managed mode with two replicas against a small in-process fake Kubernetes
//! API server (Secrets with create/409 AlreadyExists and resourceVersion/409
//! Conflict, webhook configurations with JSON patch): both replicas race to create
//! the Secret, exactly one wins, and both serve the winner's certificate over real
//! TLS; the caBundle of both webhook configurations equals the Secret's `ca.crt`.
//! A near-expiry certificate is rotated by exactly one of two racing replicas,
//! the new bundle keeps the old CA, and both replicas move to the new cert.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::net::Client;
use mesh_e2e::fake_api::Fake;
use mesh_e2e::wait::eventually;
use mesh_webhook::kubeapi::ApiClient;
use mesh_webhook::selfca::{SelfManaged, WebhookKind};
use mesh_webhook::server::{serve, AppState, Limits};
use mesh_webhook::sharedca::{keep_shared, SharedCa};
use mesh_webhook::tls::{self, CertStore};
use mesh_webhook::MeshConfig;
use serde_json::{json, Value};

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
const SVC_NAME: &str = "mesh-webhook.istio-system.svc";
const CONFIGS: [(&str, &str, &str); 2] = [
    (
        "MutatingWebhookConfiguration",
        "mesh-sidecar-injector",
        "/inject",
    ),
    (
        "ValidatingWebhookConfiguration",
        "mesh-validator",
        "/validate",
    ),
];

/// The fake API server holding both webhook configurations (no Secret yet).
async fn fake_api() -> (Arc<Fake>, u16) {
    let fake = Fake::new();
    for (kind, name, path) in CONFIGS {
        let hooks: Vec<Value> = (0..2)
            .map(|i| json!({"name": format!("{i}.mesh.istio.io"),
                "clientConfig": {"service": {"name": "mesh-webhook", "namespace": "istio-system", "path": path}}}))
            .collect();
        fake.apply(json!({"kind": kind, "metadata": {"name": name}, "webhooks": hooks}));
    }
    let port = fake.start().await.port();
    (fake, port)
}

/// (won, refused with 409) of the `method` requests on the Secret.
fn outcomes(f: &Fake, method: &str) -> (usize, usize) {
    let won = if method == "POST" { 201 } else { 200 };
    (
        f.answered(method, SECRETS, won),
        f.answered(method, SECRETS, 409),
    )
}

fn secret_field(f: &Fake, key: &str) -> String {
    let s = f
        .get("Secret", "istio-system", "mesh-webhook-certs")
        .unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s["data"][key].as_str().unwrap())
        .unwrap();
    String::from_utf8(raw).unwrap()
}

fn bundles(f: &Fake) -> Vec<String> {
    CONFIGS
        .iter()
        .flat_map(|(kind, name, _)| {
            f.get(kind, "", name).unwrap()["webhooks"]
                .as_array()
                .unwrap()
                .clone()
        })
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

    fake.hold_gets("first-", 2);
    let a = replica("first-a", port, &cfg, stop.clone()).await;
    let b = replica("first-b", port, &cfg, stop.clone()).await;
    let f = fake.clone();
    let (ra, rb) = (&a, &b);
    eventually(
        "both replicas to serve the Secret's cert",
        Duration::from_secs(10),
        || {
            let f = f.clone();
            async move {
                f.get("Secret", "istio-system", "mesh-webhook-certs")
                    .is_some()
                    && both_serve_secret(&f, ra, rb).await
            }
        },
    )
    .await;
    assert_eq!(
        outcomes(&fake, "POST"),
        (1, 1),
        "one create won, one got 409"
    );
    let want = base64::engine::general_purpose::STANDARD.encode(secret_field(&fake, "ca.crt"));
    let f = fake.clone();
    eventually(
        "every caBundle to be the Secret's CA",
        Duration::from_secs(5),
        || {
            let (f, w) = (f.clone(), want.clone());
            async move { bundles(&f).iter().all(|b| *b == w) }
        },
    )
    .await;
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
    fake.hold_gets("second-", 2);
    let a = replica("second-a", port, &near, stop.clone()).await;
    let b = replica("second-b", port, &near, stop.clone()).await;
    let f = fake.clone();
    let (ra, rb) = (&a, &b);
    let oc = old_cert.clone();
    eventually(
        "both replicas to serve the rotated cert",
        Duration::from_secs(10),
        || {
            let (f, oc) = (f.clone(), oc.clone());
            async move { secret_field(&f, "tls.crt") != oc && both_serve_secret(&f, ra, rb).await }
        },
    )
    .await;
    assert_eq!(
        outcomes(&fake, "PUT"),
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
    eventually(
        "every caBundle to be the rotated CA",
        Duration::from_secs(5),
        || {
            let (f, w) = (f.clone(), want.clone());
            async move { bundles(&f).iter().all(|b| *b == w) }
        },
    )
    .await;
    // A cert the old CA signed is still trusted by the published bundle.
    assert!(Client::connect_as(a.addr, &new_ca, SVC_NAME).await.is_ok());
    let _ = stop_tx.send(true);
}
