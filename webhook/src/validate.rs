//! The validating admission webhook (`POST /validate`): an AdmissionReview
//! (`admission.k8s.io/v1` or `v1beta1`) for an Istio resource of ours
//! (`networking.istio.io`, `security.istio.io`, every served version) is checked
//! with the agent's validation code (`mesh_agent::validate`), so `kubectl apply`
//! refuses exactly what the agent would skip, with the same message naming the
//! resource, the field path and the value.
//!
//! As Istio's validation webhook does: CREATE and UPDATE are checked, any other
//! operation is allowed; a refusal is an HTTP 200 AdmissionReview with
//! `allowed: false`, `status.message` (prefixed `configuration is invalid: `) and
//! `status.code` 400; warnings go to `response.warnings`. A body that is no
//! AdmissionReview at all is a [`BadReview`] (the server answers HTTP 400), since
//! there is no uid to answer to.

use mesh_agent::validate::{validate, validate_gateway_api, Finding, Severity};
use mesh_api::resource::{parse_object, ParseError};
use serde_json::{json, Value};

use crate::admission::{V1, V1BETA1};

/// Why a body cannot be answered with an AdmissionReview.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReview {
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    #[error("unsupported apiVersion {0:?}: expected {V1} or {V1BETA1}")]
    Version(Option<String>),
    #[error("kind is {0:?}, expected AdmissionReview")]
    Kind(Option<String>),
    #[error("AdmissionReview has no request object")]
    NoRequest,
    #[error("request.uid is missing or not a string")]
    NoUid,
}

/// The answer to a well-formed review.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub body: Value,
    pub uid: String,
    pub allowed: bool,
    pub message: Option<String>,
    pub warnings: Vec<String>,
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Answers one validation AdmissionReview body.
pub fn review(body: &[u8]) -> Result<Validated, BadReview> {
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| BadReview::NotJson(e.to_string()))?;
    let api_version = match str_at(&parsed, "apiVersion") {
        Some(v @ (V1 | V1BETA1)) => v,
        other => return Err(BadReview::Version(other.map(String::from))),
    };
    if str_at(&parsed, "kind") != Some("AdmissionReview") {
        return Err(BadReview::Kind(str_at(&parsed, "kind").map(String::from)));
    }
    let req = parsed
        .get("request")
        .filter(|r| r.is_object())
        .ok_or(BadReview::NoRequest)?;
    let uid = str_at(req, "uid").ok_or(BadReview::NoUid)?;
    let (allowed, message, warnings) = decide(req);
    let mut response = json!({"uid": uid, "allowed": allowed});
    if let Some(m) = &message {
        response["status"] = json!({"message": m, "code": 400, "reason": "BadRequest"});
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    Ok(Validated {
        body: json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response}),
        uid: uid.to_string(),
        allowed,
        message,
        warnings,
    })
}

fn deny(msg: String) -> (bool, Option<String>, Vec<String>) {
    (false, Some(msg), Vec::new())
}

/// (allowed, denial message, warnings) for one request.
fn decide(req: &Value) -> (bool, Option<String>, Vec<String>) {
    match str_at(req, "operation") {
        Some("CREATE" | "UPDATE") => {}
        // DELETE/CONNECT (or a config that routes them here): nothing to check.
        _ => return (true, None, Vec::new()),
    }
    let Some(object) = req.get("object").filter(|o| o.is_object()) else {
        return deny("cannot decode configuration: request.object is missing".into());
    };
    let mut object = object.clone();
    // The API server may leave the namespace to the request (namespaced create).
    if let (Some(ns), true) = (
        str_at(req, "namespace"),
        object.pointer("/metadata/namespace").is_none(),
    ) {
        if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("namespace".into(), json!(ns));
        }
    }
    // Gateway API objects (our CRDs carry none of upstream's CEL rules, so the
    // webhook applies them) before Istio's kinds.
    let parsed = match mesh_api::gatewayapi::parse(&object) {
        Ok(Some(r)) => Ok(Some(validate_gateway_api(&r))),
        Ok(None) => parse_object(&object).map(|o| o.map(|r| validate(&r))),
        Err(e) => Err(e),
    };
    let findings = match parsed {
        Ok(Some(f)) => f,
        Ok(None) => {
            return deny(format!(
                "unrecognized type {}/{}",
                str_at(&object, "apiVersion").unwrap_or(""),
                str_at(&object, "kind").unwrap_or("")
            ))
        }
        Err(e @ ParseError::Version { .. }) => return deny(format!("unrecognized type: {e}")),
        Err(e) => return deny(format!("configuration is invalid: {e}")),
    };
    let text = |sev: Severity| -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.severity == sev)
            .map(describe)
            .collect()
    };
    let (errors, warnings) = (text(Severity::Error), text(Severity::Warning));
    if errors.is_empty() {
        (true, None, warnings)
    } else {
        (
            false,
            Some(format!("configuration is invalid: {}", errors.join("; "))),
            warnings,
        )
    }
}

/// `Kind/ns/name: path: message (value v)`, the agent's wording without the severity.
fn describe(f: &Finding) -> String {
    let mut s = format!("{}: {}: {}", f.resource, f.path, f.message);
    if !f.value.is_empty() {
        s.push_str(&format!(" (value {})", f.value));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(api: &str, op: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": api, "kind": "AdmissionReview",
            "request": {"uid": "u-7", "operation": op, "namespace": "shop", "object": object}}))
        .unwrap()
    }

    fn vs(weight: i64) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": weight}]}]}})
    }

    #[test]
    fn gateway_api_routes_are_validated() {
        let route = |path: &str| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "web"},
                "spec": {"parentRefs": [{"name": "edge"}],
                    "rules": [{"matches": [{"path": {"type": "Exact", "value": path}}]}]}})
        };
        let ok = review(&body(V1, "CREATE", route("/a"))).unwrap();
        assert!(ok.allowed, "{:?}", ok.message);
        let bad = review(&body(V1, "CREATE", route("a"))).unwrap();
        assert!(!bad.allowed);
        let m = bad.body["response"]["status"]["message"].as_str().unwrap();
        assert!(
            m.contains("HTTPRoute/shop/web: spec.rules[0].matches[0].path.value: path \"a\""),
            "{m}"
        );
    }

    #[test]
    fn good_allowed_bad_refused_with_path_and_value() {
        for api in [V1, V1BETA1] {
            let ok = review(&body(api, "CREATE", vs(100))).unwrap();
            assert!(ok.allowed, "{:?}", ok.message);
            assert_eq!(ok.body["apiVersion"], api);
            let bad = review(&body(api, "UPDATE", vs(-5))).unwrap();
            assert!(!bad.allowed);
            let m = bad.body["response"]["status"]["message"].as_str().unwrap();
            assert!(
                m.contains("VirtualService/shop/reviews")
                    && m.contains("spec.http[0].route[0].weight")
                    && m.contains("-5"),
                "{m}"
            );
            assert_eq!(bad.body["response"]["status"]["code"], 400);
            assert_eq!(bad.body["response"]["uid"], "u-7");
        }
        assert!(review(&body(V1, "DELETE", vs(-5))).unwrap().allowed);
    }

    #[test]
    fn malformed_reviews_are_errors_not_answers() {
        for b in [
            &b"nope"[..],
            b"{}",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
        ] {
            assert!(review(b).is_err(), "{}", String::from_utf8_lossy(b));
        }
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}});
        let r = review(&body(V1, "CREATE", svc)).unwrap();
        assert!(!r.allowed && r.message.unwrap().contains("unrecognized type"));
    }
}
