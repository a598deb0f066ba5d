//! The gateway controller's decisions, as plain functions: which objects the
//! Gateways ask for, which managed objects are left over, where a Gateway API
//! object's status lives, the `lastTransitionTime`s of a status about to be
//! written, and a GatewayClass' own `Accepted` status.

use mesh_api::gatewayapi::common::{condition, reason, CONTROLLER_NAME, GROUP};
use mesh_api::gatewayapi::deploy::{self, MANAGED_LABEL, MANAGED_VALUE};
use mesh_api::gatewayapi::{Gateway, GatewayClass, GATEWAY_KEY_KIND};
use mesh_api::resource::ResourceKey;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The kinds the deployer creates: (apiVersion, kind, plural).
pub const DEPLOYED: [(&str, &str, &str); 3] = [
    ("v1", "ServiceAccount", "serviceaccounts"),
    ("apps/v1", "Deployment", "deployments"),
    ("v1", "Service", "services"),
];

/// One generated object: (kind, namespace, name).
pub type ObjectRef = (String, String, String);

/// What the Gateways ask for: the objects to apply, and the Gateways that
/// could not be deployed with why (one message each; the others still are).
/// A Gateway whose class exists with another controller is not ours.
pub fn desired(
    gateways: &[Gateway],
    classes: &BTreeMap<String, GatewayClass>,
) -> (Vec<Value>, Vec<String>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for gw in gateways {
        let class = &gw.spec.gateway_class_name;
        if !deploy::is_deployed_class(class) {
            continue;
        }
        if classes
            .get(class)
            .is_some_and(|c| c.spec.controller_name != CONTROLLER_NAME)
        {
            continue;
        }
        match deploy::objects(gw) {
            Ok(o) => objects.extend(o),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (objects, errors)
}

/// (kind, namespace, name) of a generated object.
pub fn object_ref(o: &Value) -> ObjectRef {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    )
}

/// Whether an existing object is one the controller made: it carries the
/// managed label and is owned by a Gateway API Gateway.
pub fn managed(o: &Value) -> bool {
    o["metadata"]["labels"][MANAGED_LABEL] == MANAGED_VALUE
        && o["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| {
                refs.iter().any(|r| {
                    r["kind"] == "Gateway"
                        && r["apiVersion"]
                            .as_str()
                            .is_some_and(|a| a.starts_with(&format!("{GROUP}/")))
                })
            })
}

/// Managed objects that no Gateway asks for any more (deleted, or moved to
/// another class or name).
pub fn leftovers(existing: &[Value], want: &[Value]) -> Vec<ObjectRef> {
    let want: BTreeSet<ObjectRef> = want.iter().map(object_ref).collect();
    existing
        .iter()
        .filter(|o| managed(o))
        .map(object_ref)
        .filter(|r| !want.contains(r))
        .collect()
}

/// Where a Gateway API object lives: (apiVersion, plural, namespaced).
/// `None` for kinds without a status (ReferenceGrant) or not of this group.
pub fn status_target(key: &ResourceKey) -> Option<(String, &'static str, bool)> {
    let (kind, plural) = match key.kind.as_str() {
        GATEWAY_KEY_KIND => ("Gateway", "gateways"),
        "GatewayClass" => ("GatewayClass", "gatewayclasses"),
        "HTTPRoute" => ("HTTPRoute", "httproutes"),
        "GRPCRoute" => ("GRPCRoute", "grpcroutes"),
        "TLSRoute" => ("TLSRoute", "tlsroutes"),
        "TCPRoute" => ("TCPRoute", "tcproutes"),
        _ => return None,
    };
    let version = mesh_api::gatewayapi::versions(kind)?.first()?;
    Some((format!("{GROUP}/{version}"), plural, kind != "GatewayClass"))
}

/// `next` with every condition's `lastTransitionTime` set: kept from the
/// matching condition of `prev` when its status did not change, `now`
/// otherwise. Conditions are matched by `type`; the lists holding them
/// (listeners, route parents) by `name` or `parentRef`, else by position.
pub fn stamp(prev: &Value, next: &Value, now: &str) -> Value {
    let mut out = next.clone();
    stamp_in(Some(prev), &mut out, now);
    out
}

fn stamp_in(prev: Option<&Value>, next: &mut Value, now: &str) {
    let Some(obj) = next.as_object_mut() else {
        return;
    };
    for (k, v) in obj.iter_mut() {
        let p = prev.and_then(|p| p.get(k));
        match v {
            Value::Array(items) if k == "conditions" => {
                for c in items.iter_mut() {
                    let before = p
                        .and_then(|p| p.as_array())
                        .and_then(|ps| ps.iter().find(|pc| pc["type"] == c["type"]));
                    let kept = before
                        .filter(|b| b["status"] == c["status"])
                        .and_then(|b| b.get("lastTransitionTime"))
                        .filter(|t| t.is_string())
                        .cloned();
                    c["lastTransitionTime"] = kept.unwrap_or_else(|| json!(now));
                }
            }
            Value::Array(items) => {
                let ps = p.and_then(|p| p.as_array());
                for (i, item) in items.iter_mut().enumerate() {
                    let before = ps.and_then(|ps| {
                        ["name", "parentRef"]
                            .iter()
                            .find(|id| item.get(**id).is_some())
                            .map_or(ps.get(i), |id| {
                                ps.iter().find(|pi| pi.get(*id) == item.get(*id))
                            })
                    });
                    stamp_in(before, item, now);
                }
            }
            Value::Object(_) => stamp_in(p, v, now),
            _ => {}
        }
    }
}

/// `next` (a route status) with the `parents` entries other controllers wrote
/// in `cur` kept: a route may be attached to several controllers' Gateways,
/// and each controller owns only its own entries.
pub fn keep_foreign_parents(cur: &Value, next: &Value) -> Value {
    let mut out = next.clone();
    let Some(theirs) = cur["parents"].as_array() else {
        return out;
    };
    let foreign: Vec<Value> = theirs
        .iter()
        .filter(|p| p["controllerName"] != CONTROLLER_NAME)
        .cloned()
        .collect();
    if foreign.is_empty() {
        return out;
    }
    match out.get_mut("parents").and_then(Value::as_array_mut) {
        Some(ours) => ours.extend(foreign),
        None => out["parents"] = Value::Array(foreign),
    }
    out
}

/// The status a GatewayClass of our controller gets (Istio's wording), or
/// `None` when its current status already says so for this generation.
pub fn class_status(class: &Value, now: &str) -> Option<Value> {
    if class["spec"]["controllerName"] != CONTROLLER_NAME {
        return None;
    }
    let generation = class["metadata"]["generation"].clone();
    let conds = class["status"]["conditions"].as_array();
    let done = conds.is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == condition::ACCEPTED
                && c["status"] == "True"
                && (generation.is_null() || c["observedGeneration"] == generation)
        })
    });
    if done {
        return None;
    }
    let mut c = json!({
        "type": condition::ACCEPTED,
        "status": "True",
        "reason": reason::ACCEPTED,
        "message": "Handled by Istio controller",
    });
    if !generation.is_null() {
        c["observedGeneration"] = generation;
    }
    // Other conditions (written by the translation) stay as they are.
    let mut all: Vec<Value> = conds
        .into_iter()
        .flatten()
        .filter(|c| c["type"] != condition::ACCEPTED)
        .cloned()
        .collect();
    all.push(c);
    Some(stamp(&class["status"], &json!({ "conditions": all }), now))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
