//! Helpers shared by the integration tests: conformance data paths, YAML document
//! handling, and pod extraction from workloads.
#![allow(dead_code)]

use serde_json::Value;

pub const CONFORMANCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/istio-inject"
);

pub fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{CONFORMANCE}/{name}"))
        .unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// Parses a YAML stream into its non-empty documents.
pub fn docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).expect("valid YAML document");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

/// Pod templates (or pods) in a document with the workload owning each.
pub fn workload_pods(doc: &Value) -> Vec<(Value, Value)> {
    if doc["kind"] == "List" {
        return doc["items"]
            .as_array()
            .map(|i| i.iter().flat_map(workload_pods).collect())
            .unwrap_or_default();
    }
    pods(doc).into_iter().map(|p| (p, doc.clone())).collect()
}

/// Pod templates (or pods) in a document, in order, as `{metadata, spec}` objects.
pub fn pods(doc: &Value) -> Vec<Value> {
    match doc["kind"].as_str().unwrap_or_default() {
        "List" => doc["items"]
            .as_array()
            .map(|i| i.iter().flat_map(pods).collect())
            .unwrap_or_default(),
        "Pod" => vec![doc.clone()],
        "CronJob" => {
            // Istio writes a CronJob's pod metadata onto `jobTemplate.metadata` (a
            // quirk: the pods never see it); we put it on the pod template. Read
            // Istio's from where Istio put it.
            let mut t = doc["spec"]["jobTemplate"]["spec"]["template"].clone();
            let jm = &doc["spec"]["jobTemplate"]["metadata"];
            if jm.is_object() && t["metadata"]["annotations"].is_null() {
                t["metadata"] = jm.clone();
            }
            vec![t]
        }
        _ if doc["spec"]["template"].is_object() => vec![doc["spec"]["template"].clone()],
        _ => Vec::new(),
    }
}

/// A workload's pod template turned into the Pod its controller would create and
/// the API server would send the webhook (generateName, owner reference).
pub fn as_pod(template: &Value, namespace: &str) -> Value {
    as_pod_of(template, namespace, &Value::Null)
}

pub fn as_pod_of(template: &Value, namespace: &str, workload: &Value) -> Value {
    use serde_json::json;
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    if meta["namespace"].is_null() {
        meta["namespace"] = json!(namespace);
    }
    let (kind, name) = (
        workload["kind"].as_str(),
        workload["metadata"]["name"].as_str(),
    );
    if let (Some(kind), Some(name)) = (kind, name) {
        if kind != "Pod" && meta["name"].is_null() {
            let (okind, oname, api) = if kind == "Deployment" {
                meta["labels"]["pod-template-hash"] = json!("5d8f7c");
                ("ReplicaSet", format!("{name}-5d8f7c"), "apps/v1")
            } else {
                (
                    kind,
                    name.to_string(),
                    workload["apiVersion"].as_str().unwrap_or("v1"),
                )
            };
            meta["generateName"] = json!(format!("{oname}-"));
            meta["ownerReferences"] = json!([{"apiVersion": api, "kind": okind, "name": oname,
                "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]);
        }
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// An AdmissionReview carrying `pod`.
pub fn review_for(pod: &Value, uid: &str, api_version: &str) -> Value {
    serde_json::json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "object": pod,
        }
    })
}

/// Applies the base64 JSONPatch of an AdmissionReview response to `pod`.
pub fn apply_response(pod: &Value, response: &Value) -> Value {
    use base64::Engine;
    let mut out = pod.clone();
    if let Some(p) = response["response"]["patch"].as_str() {
        assert_eq!(response["response"]["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(p)
            .expect("patch is base64");
        let patch: json_patch::Patch =
            serde_json::from_slice(&raw).expect("patch is RFC 6902 JSON");
        json_patch::patch(&mut out, &patch).expect("patch applies to the pod it was made for");
    }
    out
}

/// A CA and serving certificates it signs (rcgen), as PEM.
pub struct TestCa {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (cert PEM, key PEM) for `localhost` and 127.0.0.1.
    pub fn serving(&self) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub mod net;
