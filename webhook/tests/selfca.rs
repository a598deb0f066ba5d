//! Self-managed mode against a small in-process fake Kubernetes API server: the
//! generated serving cert is trusted through the generated CA under the Service's
//! DNS name, the caBundle of every webhook is patched to that CA, and re-patched
//! when something else changes it; a config without webhooks or a missing one is
//! an error naming it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::net::{Client, TestServer};
use mesh_e2e::fake_api::Fake;
use mesh_e2e::wait::eventually;
use mesh_webhook::kubeapi::ApiClient;
use mesh_webhook::selfca::{keep_ca_bundle, sync_ca_bundle, SelfManaged};
use mesh_webhook::server::Limits;
use serde_json::json;

const MWC: &str = "MutatingWebhookConfiguration";
const MWCS: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/";

async fn fake_api() -> (Arc<Fake>, ApiClient) {
    let fake = Fake::new();
    fake.apply(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": MWC,
    "metadata": {"name": "mesh-sidecar-injector"},
    "webhooks": [
        {"name": "ns.sidecar-injector.istio.io", "clientConfig": {"service": {"name": "mesh-webhook", "namespace": "istio-system", "path": "/inject"}}},
        {"name": "obj.sidecar-injector.istio.io", "clientConfig": {"service": {"name": "mesh-webhook", "namespace": "istio-system", "path": "/inject"}, "caBundle": "c3RhbGU="}},
    ]}));
    fake.apply(json!({"kind": MWC, "metadata": {"name": "broken"}}));
    let addr = fake.start().await;
    let api = ApiClient::from_url(&format!("http://{addr}"), Some("token".into())).unwrap();
    (fake, api)
}

fn bundles(f: &Fake) -> Vec<Option<String>> {
    f.get(MWC, "", "mesh-sidecar-injector").unwrap()["webhooks"]
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
    assert_eq!(fake.answered("PATCH", MWCS, 200), 1);

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
    let mut drifted = fake.get(MWC, "", "mesh-sidecar-injector").unwrap();
    drifted["webhooks"][1]["clientConfig"]["caBundle"] = json!("ZHJpZnQ=");
    fake.apply(drifted);
    let f = fake.clone();
    let w = want.clone();
    eventually(
        "the keeper to repair the drifted caBundle",
        Duration::from_secs(5),
        || {
            let (f, w) = (f.clone(), w.clone());
            async move { bundles(&f) == vec![Some(w.clone()), Some(w)] }
        },
    )
    .await;
    let _ = stop_tx.send(true);
}
