//! OpenShift Service Mesh injection through the real HTTPS admission server, with
//! the mesh config the OSSM overlay ships (`policy: memberRoll`): in a member
//! namespace (the only ones the overlay's webhook is called for) a pod annotated
//! `sidecar.istio.io/inject: "true"` gets a sidecar, one without the annotation
//! or labelled `"false"` does not. Which namespaces are sent at all is the
//! overlay's namespaceSelector (tests/tests/manifests.rs checks it); the decision
//! with namespace labels (non-members refused) is unit-tested in decide.rs.

mod common;

use common::net::{Client, TestServer};
use common::{apply_response, review_for, TestCa};
use mesh_webhook::server::Limits;
use serde_json::{json, Value};

const MESH: &str = include_str!("../../manifests/overlays/maistra/mesh.yaml");

fn pod(labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "bookinfo", "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]}})
}

fn has_proxy(p: &Value) -> bool {
    ["containers", "initContainers"].iter().any(|k| {
        p["spec"][k]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == "istio-proxy"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_pods_are_injected_only_when_annotated() {
    let ca = TestCa::new("ca-ossm");
    let (cert, key) = ca.serving();
    let srv = TestServer::start(&cert, &key, MESH, Limits::default()).await;
    let mut c = Client::connect(srv.addr, &ca.cert_pem).await.unwrap();

    let cases = [
        (
            "annotated",
            pod(
                json!({"app": "web"}),
                json!({"sidecar.istio.io/inject": "true"}),
            ),
            true,
        ),
        (
            "not annotated",
            pod(json!({"app": "web"}), json!({})),
            false,
        ),
        (
            "annotated false",
            pod(
                json!({"app": "web"}),
                json!({"sidecar.istio.io/inject": "false"}),
            ),
            false,
        ),
        (
            "label false wins",
            pod(
                json!({"sidecar.istio.io/inject": "false"}),
                json!({"sidecar.istio.io/inject": "true"}),
            ),
            false,
        ),
    ];
    for (i, (what, p, want)) in cases.iter().enumerate() {
        let r = c
            .post_json(&review_for(p, &format!("uid-{i}"), "admission.k8s.io/v1"))
            .await;
        assert_eq!(r["response"]["allowed"], true, "{what}: {r}");
        if *want {
            assert!(has_proxy(&apply_response(p, &r)), "{what}: {r}");
        } else {
            assert!(r["response"]["patch"].is_null(), "{what}: {r}");
        }
    }
}
