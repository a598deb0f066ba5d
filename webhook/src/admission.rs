//! AdmissionReview in, AdmissionReview out (`admission.k8s.io/v1` and `v1beta1`),
//! with no I/O: the server hands us the body bytes and sends back what we return.
//! Every failure becomes `allowed: false` with a message saying what was wrong;
//! nothing here panics on any input.

use base64::Engine;
use mesh_api::meshconfig::MeshConfig;
use serde_json::{json, Value};

use crate::decide::{decide, Decision};
use crate::inject::{inject_value, InjectContext};
use crate::Pod;

pub const V1: &str = "admission.k8s.io/v1";
pub const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// What we answered, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewed {
    /// The AdmissionReview to send back.
    pub body: Value,
    pub uid: String,
    pub allowed: bool,
    /// Number of patch operations (0 when none is sent).
    pub patch_ops: usize,
    /// Why we denied or skipped.
    pub message: Option<String>,
}

fn answer(
    api_version: &str,
    uid: &str,
    allowed: bool,
    patch: Option<String>,
    message: Option<String>,
    ops: usize,
) -> Reviewed {
    let mut response = json!({"uid": uid, "allowed": allowed});
    if let Some(p) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(p);
    }
    if let (false, Some(m)) = (allowed, &message) {
        response["status"] = json!({"message": m});
    }
    Reviewed {
        body: json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response}),
        uid: uid.to_string(),
        allowed,
        patch_ops: ops,
        message,
    }
}

fn deny(api_version: &str, uid: &str, message: String) -> Reviewed {
    answer(api_version, uid, false, None, Some(message), 0)
}

/// Answers one AdmissionReview body.
pub fn review(body: &[u8], mesh: &MeshConfig, ctx: &InjectContext) -> Reviewed {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return deny(V1, "", format!("request body is not JSON: {e}")),
    };
    let api_version = match parsed.get("apiVersion").and_then(Value::as_str) {
        Some(v @ (V1 | V1BETA1)) => v,
        other => {
            return deny(
                V1,
                "",
                format!("unsupported apiVersion {other:?}: expected {V1} or {V1BETA1}"),
            )
        }
    };
    if parsed.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return deny(
            api_version,
            "",
            format!("kind is {:?}, expected AdmissionReview", parsed.get("kind")),
        );
    }
    let Some(req) = parsed.get("request").filter(|r| r.is_object()) else {
        return deny(api_version, "", "AdmissionReview has no request".into());
    };
    let Some(uid) = req.get("uid").and_then(Value::as_str) else {
        return deny(
            api_version,
            "",
            "request.uid is missing or not a string".into(),
        );
    };
    let req_kind = req.pointer("/kind/kind").and_then(Value::as_str);
    if let Some(k) = req_kind.filter(|k| *k != "Pod") {
        return deny(
            api_version,
            uid,
            format!("only Pods are injected; request.kind.kind is {k:?}"),
        );
    }
    let Some(object) = req.get("object").filter(|o| o.is_object()) else {
        return deny(
            api_version,
            uid,
            "request.object is missing or not an object".into(),
        );
    };
    if let Some(k) = object
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| *k != "Pod")
    {
        return deny(
            api_version,
            uid,
            format!("only Pods are injected; request.object.kind is {k:?}"),
        );
    }
    let mut pod: Pod = match serde_json::from_value(object.clone()) {
        Ok(p) => p,
        Err(e) => {
            return deny(
                api_version,
                uid,
                format!("request.object is not a valid Pod: {e}"),
            )
        }
    };
    if pod.spec.is_none() {
        return deny(
            api_version,
            uid,
            "request.object is a Pod without spec".into(),
        );
    }
    let mut ctx = ctx.clone();
    if let Some(ns) = req.get("namespace").and_then(Value::as_str) {
        ctx.namespace = Some(ns.to_string());
        // Pods created by controllers often carry no namespace yet; the request does.
        pod.metadata.namespace.get_or_insert_with(|| ns.to_string());
    }
    if let Decision::Skip(why) = decide(&pod, None, mesh) {
        return answer(
            api_version,
            uid,
            true,
            None,
            Some(format!("not injected: {why}")),
            0,
        );
    }
    match inject_value(object, mesh, &ctx) {
        Ok(patch) if patch.0.is_empty() => answer(api_version, uid, true, None, None, 0),
        Ok(patch) => {
            let ops = patch.0.len();
            let bytes = serde_json::to_vec(&patch).unwrap_or_default();
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            answer(api_version, uid, true, Some(b64), None, ops)
        }
        Err(e) => deny(api_version, uid, format!("injection failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(api: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": api, "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "shop", "operation": "CREATE", "object": object}
        }))
        .unwrap()
    }

    fn pod(ann: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": ann},
            "spec": {"containers": [{"name": "app", "image": "app"}]}})
    }

    #[test]
    fn patches_and_echoes_uid_and_version() {
        for api in [V1, V1BETA1] {
            let r = review(
                &body(api, pod(json!({}))),
                &MeshConfig::default(),
                &InjectContext::default(),
            );
            assert!(r.allowed, "{:?}", r.message);
            assert_eq!(r.body["apiVersion"], api);
            assert_eq!(r.body["response"]["uid"], "u-1");
            assert_eq!(r.body["response"]["patchType"], "JSONPatch");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(r.body["response"]["patch"].as_str().unwrap())
                .unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
            let mut p = pod(json!({}));
            json_patch::patch(&mut p, &patch).unwrap();
            assert_eq!(p["spec"]["initContainers"][1]["name"], "istio-proxy");
        }
    }

    #[test]
    fn bad_annotation_is_denied_with_its_name_and_value() {
        let a = json!({"traffic.sidecar.istio.io/excludeInboundPorts": "70000"});
        let r = review(
            &body(V1, pod(a)),
            &MeshConfig::default(),
            &InjectContext::default(),
        );
        assert!(!r.allowed);
        let m = r.body["response"]["status"]["message"].as_str().unwrap();
        assert!(
            m.contains("traffic.sidecar.istio.io/excludeInboundPorts") && m.contains("70000"),
            "{m}"
        );
        assert!(r.body["response"].get("patch").is_none());
    }

    #[test]
    fn garbage_is_denied_not_panicked() {
        let m = MeshConfig::default();
        let c = InjectContext::default();
        for b in [
            &b"nope"[..],
            b"{}",
            b"[]",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":{"kind":"Service"}}}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":{"spec":{"containers":7}}}}"#,
        ] {
            let r = review(b, &m, &c);
            assert!(!r.allowed, "{}", String::from_utf8_lossy(b));
            assert!(r.message.is_some());
        }
        let skipped = review(
            &body(V1, pod(json!({"sidecar.istio.io/inject": "false"}))),
            &m,
            &c,
        );
        assert!(skipped.allowed && skipped.patch_ops == 0);
    }
}
