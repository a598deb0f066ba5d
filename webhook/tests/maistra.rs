//! OpenShift Service Mesh injection through the real HTTPS admission server, with
//! the mesh config and the webhook selectors the OSSM overlay ships
//! (`manifests/overlays/maistra`). The test plays the API server: a pod is sent
//! to the server only when the overlay's namespaceSelector and objectSelector
//! match (as the API server decides), and the server's answer is applied. In a
//! member namespace a pod annotated `sidecar.istio.io/inject: "true"` gets a
//! sidecar; one without the annotation, or labelled `"false"`, does not; a pod
//! of a non-member namespace (even labelled `istio-injection=enabled`) never
//! does.

mod common;

use common::net::{Client, TestServer};
use common::{apply_response, review_for, TestCa};
use mesh_api::meshconfig::LabelSelector;
use mesh_webhook::server::Limits;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const MESH: &str = include_str!("../../manifests/overlays/maistra/mesh.yaml");
/// The overlay's JSON6902 patch whose value is the one injector webhook.
const WEBHOOK: &str = include_str!("../../manifests/overlays/maistra/mutating.yaml");

/// Would the API server call the webhook for a pod with these labels in a
/// namespace with these labels?
fn sent(ns: &str, ns_labels: &[(&str, &str)], pod_labels: &Value) -> bool {
    let patch: Value = serde_yaml_ng::from_str(WEBHOOK).unwrap();
    let hook = &patch[0]["value"][0];
    let sel = |v: &Value| -> LabelSelector { serde_json::from_value(v.clone()).unwrap() };
    let mut nsl: BTreeMap<String, String> = ns_labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    nsl.insert("kubernetes.io/metadata.name".into(), ns.into());
    let pl: BTreeMap<String, String> = serde_json::from_value(pod_labels.clone()).unwrap();
    sel(&hook["namespaceSelector"]).matches(&nsl) && sel(&hook["objectSelector"]).matches(&pl)
}

fn pod(ns: &str, labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": ns, "labels": labels, "annotations": annotations},
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

    let member: &[(&str, &str)] = &[("maistra.io/member-of", "istio-system")];
    let not_member: &[(&str, &str)] = &[("istio-injection", "enabled")];
    let other_mesh: &[(&str, &str)] = &[("maistra.io/member-of", "other-cp")];
    let yes = json!({"sidecar.istio.io/inject": "true"});
    let cases = [
        (
            "member, annotated",
            "bookinfo",
            member,
            json!({"app": "web"}),
            yes.clone(),
            true,
        ),
        (
            "member, not annotated",
            "bookinfo",
            member,
            json!({"app": "web"}),
            json!({}),
            false,
        ),
        (
            "member, annotated false",
            "bookinfo",
            member,
            json!({"app": "web"}),
            json!({"sidecar.istio.io/inject": "false"}),
            false,
        ),
        (
            "member, label false wins",
            "bookinfo",
            member,
            json!({"sidecar.istio.io/inject": "false"}),
            yes.clone(),
            false,
        ),
        (
            "non-member, annotated",
            "plain",
            not_member,
            json!({"app": "web"}),
            yes.clone(),
            false,
        ),
        (
            "other mesh, annotated",
            "theirs",
            other_mesh,
            json!({"app": "web"}),
            yes.clone(),
            false,
        ),
    ];
    let mut answered = 0;
    for (i, (what, ns, ns_labels, labels, annotations, want)) in cases.into_iter().enumerate() {
        let p = pod(ns, labels.clone(), annotations);
        let admitted = if sent(ns, ns_labels, &labels) {
            let r = c
                .post_json(&review_for(&p, &format!("uid-{i}"), "admission.k8s.io/v1"))
                .await;
            answered += 1;
            assert_eq!(r["response"]["allowed"], true, "{what}: {r}");
            assert_eq!(r["response"]["patch"].is_null(), !want, "{what}: {r}");
            apply_response(&p, &r)
        } else {
            p
        };
        assert_eq!(has_proxy(&admitted), want, "{what}");
    }
    // Member pods not labelled "false" went through the server; the others
    // never did.
    assert_eq!(answered, 3);
}
