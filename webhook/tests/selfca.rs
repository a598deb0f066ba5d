//! Self-managed mode against a small in-process fake Kubernetes API server: the
//! generated serving cert is trusted through the generated CA under the Service's
//! DNS name, the caBundle of every webhook is patched to that CA, and re-patched
//! when something else changes it; a config without webhooks or a missing one is
//! an error naming it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use common::net::{eventually, Client, TestServer};
use mesh_webhook::kubeapi::ApiClient;
use mesh_webhook::selfca::{keep_ca_bundle, sync_ca_bundle, SelfManaged};
use mesh_webhook::server::Limits;
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    objects: Mutex<std::collections::BTreeMap<String, Value>>,
    patches: Mutex<usize>,
}

async fn get_mwc(
    State(f): State<Arc<Fake>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    f.objects
        .lock()
        .unwrap()
        .get(&name)
        .cloned()
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}

async fn patch_mwc(
    State(f): State<Arc<Fake>>,
    Path(name): Path<String>,
    body: String,
) -> Result<Json<Value>, (StatusCode, String)> {
    let patch: json_patch::Patch =
        serde_json::from_str(&body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut objs = f.objects.lock().unwrap();
    let obj = objs
        .get_mut(&name)
        .ok_or((StatusCode::NOT_FOUND, name.clone()))?;
    let mut next = obj.clone();
    json_patch::patch(&mut next, &patch).map_err(|e| (StatusCode::CONFLICT, e.to_string()))?;
    let rv: u64 = next["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    next["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
    *obj = next.clone();
    *f.patches.lock().unwrap() += 1;
    Ok(Json(next))
}

async fn fake_api() -> (Arc<Fake>, ApiClient) {
    let fake = Arc::new(Fake::default());
    let mwc = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
    "metadata": {"name": "mesh-sidecar-injector", "resourceVersion": "1"},
    "webhooks": [
        {"name": "ns.sidecar-injector.istio.io", "clientConfig": {"service": {"name": "mesh-webhook", "namespace": "istio-system", "path": "/inject"}}},
        {"name": "obj.sidecar-injector.istio.io", "clientConfig": {"service": {"name": "mesh-webhook", "namespace": "istio-system", "path": "/inject"}, "caBundle": "c3RhbGU="}},
    ]});
    fake.objects
        .lock()
        .unwrap()
        .insert("mesh-sidecar-injector".into(), mwc);
    fake.objects.lock().unwrap().insert(
        "broken".into(),
        json!({"metadata": {"resourceVersion": "1"}}),
    );
    let app = Router::new()
        .route(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
            get(get_mwc).patch(patch_mwc),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        fake,
        ApiClient::from_url(&format!("http://127.0.0.1:{port}"), Some("token".into())).unwrap(),
    )
}

fn bundles(f: &Fake) -> Vec<Option<String>> {
    f.objects.lock().unwrap()["mesh-sidecar-injector"]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["clientConfig"]["caBundle"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_cert_and_ca_bundle() {
    let sm = SelfManaged::generate("mesh-webhook", "istio-system").unwrap();

    // The serving cert is valid for the Service name under the generated CA.
    let srv = TestServer::start(&sm.cert_pem, &sm.key_pem, "", Limits::default()).await;
    let mut c = Client::connect_as(srv.addr, &sm.ca_pem, "mesh-webhook.istio-system.svc")
        .await
        .unwrap();
    assert_eq!(c.request("GET", "/healthz", None, vec![]).await.0, 200);
    assert!(
        Client::connect_as(srv.addr, &sm.ca_pem, "other.istio-system.svc")
            .await
            .is_err()
    );

    let (fake, api) = fake_api().await;
    let want = base64::engine::general_purpose::STANDARD.encode(&sm.ca_pem);
    assert!(sync_ca_bundle(&api, "mesh-sidecar-injector", &sm.ca_pem)
        .await
        .unwrap());
    assert_eq!(bundles(&fake), vec![Some(want.clone()), Some(want.clone())]);
    assert!(
        !sync_ca_bundle(&api, "mesh-sidecar-injector", &sm.ca_pem)
            .await
            .unwrap(),
        "no drift, no patch"
    );
    assert_eq!(*fake.patches.lock().unwrap(), 1);

    let e = sync_ca_bundle(&api, "broken", &sm.ca_pem)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken") && e.contains("webhooks"), "{e}");
    let e = sync_ca_bundle(&api, "missing", &sm.ca_pem)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("404"), "{e}");

    // Drift is repaired by the keeper.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    keep_ca_bundle(
        Arc::new(api),
        "mesh-sidecar-injector".into(),
        sm.ca_pem.clone(),
        Duration::from_millis(50),
        stop_rx,
    );
    fake.objects
        .lock()
        .unwrap()
        .get_mut("mesh-sidecar-injector")
        .unwrap()["webhooks"][1]["clientConfig"]["caBundle"] = json!("ZHJpZnQ=");
    let f = fake.clone();
    let w = want.clone();
    assert!(
        eventually(5, || {
            let (f, w) = (f.clone(), w.clone());
            async move { bundles(&f) == vec![Some(w.clone()), Some(w)] }
        })
        .await
    );
    let _ = stop_tx.send(true);
}
