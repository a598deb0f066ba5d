//! Status conditions, as JSON in the upstream shape. Deterministic: the
//! `lastTransitionTime` is the object's `creationTimestamp` (see the module docs
//! of `gatewayapi`), `observedGeneration` its `metadata.generation`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_api::gatewayapi::{condition, reason, ParentReference, CONTROLLER_NAME};
use serde_json::{json, Value};

/// One condition of an object with metadata `meta`.
pub fn cond(meta: &ObjectMeta, type_: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": meta.generation.unwrap_or(0),
        "lastTransitionTime": meta
            .creation_timestamp
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or_else(|| json!("1970-01-01T00:00:00Z")),
    })
}

/// A GatewayClass we own: Accepted.
pub fn class_status(meta: &ObjectMeta) -> Value {
    json!({ "conditions": [cond(meta, condition::ACCEPTED, true, reason::ACCEPTED, "Handled by the mesh's Gateway API controller")] })
}

/// What a route learned about one parentRef.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentResult {
    pub parent: ParentReference,
    /// `None`: Accepted; `Some((reason, message))`: not accepted.
    pub not_accepted: Option<(&'static str, String)>,
    /// `None`: refs resolved; `Some((reason, message))`: the first failure.
    pub unresolved: Option<(&'static str, String)>,
}

/// A route's `status`: one entry per parentRef we own.
pub fn route_status(meta: &ObjectMeta, parents: &[ParentResult]) -> Value {
    let parents: Vec<Value> = parents
        .iter()
        .map(|p| {
            let accepted = match &p.not_accepted {
                None => cond(
                    meta,
                    condition::ACCEPTED,
                    true,
                    reason::ACCEPTED,
                    "Route was valid",
                ),
                Some((r, m)) => cond(meta, condition::ACCEPTED, false, r, m),
            };
            let resolved = match &p.unresolved {
                None => cond(
                    meta,
                    condition::RESOLVED_REFS,
                    true,
                    reason::RESOLVED_REFS,
                    "All references resolved",
                ),
                Some((r, m)) => cond(meta, condition::RESOLVED_REFS, false, r, m),
            };
            json!({
                "parentRef": p.parent,
                "controllerName": CONTROLLER_NAME,
                "conditions": [accepted, resolved],
            })
        })
        .collect();
    json!({ "parents": parents })
}
