//! CustomResourceDefinitions generated from the Rust types, so the schema the API
//! server enforces and the one our parser accepts cannot drift. Every kind is served
//! under all of Istio's versions with one schema (storage: `v1`), and every object
//! in the schema preserves unknown fields: we keep what users wrote and warn about it.

use crate::gatewayapi::{
    self, GRPCRoute, GatewayClass, HTTPRoute, ReferenceGrant, TCPRoute, TLSRoute,
};
use crate::maistra::member::{ServiceMeshMember, ServiceMeshMemberRoll};
use crate::maistra::smcp::ServiceMeshControlPlane;
use crate::networking::{DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService};
use crate::security::{AuthorizationPolicy, PeerAuthentication};
use crate::telemetry::Telemetry;
use crate::{maistra, networking, security, telemetry};
use kube::CustomResourceExt;
use serde_json::Value;

/// One generated CRD: its file stem (`virtualservices.networking.istio.io`) and body.
pub struct GeneratedCrd {
    pub name: String,
    pub body: Value,
}

/// All CRDs: the Istio kinds in [`crate::resource::KINDS`] order, then OSSM's
/// ServiceMeshControlPlane, ServiceMeshMemberRoll and ServiceMeshMember, then the
/// Gateway API kinds in [`gatewayapi::KINDS`] order (served versions from
/// [`gatewayapi::versions`], the first one stored).
pub fn crds() -> Vec<GeneratedCrd> {
    let n = &networking::VERSIONS[..];
    let s = &security::VERSIONS[..];
    let g = |kind: &str| gatewayapi::versions(kind).unwrap_or(&[]);
    vec![
        finish(serde_json::to_value(VirtualService::crd()), n),
        finish(serde_json::to_value(DestinationRule::crd()), n),
        finish(serde_json::to_value(Gateway::crd()), n),
        finish(serde_json::to_value(ServiceEntry::crd()), n),
        finish(serde_json::to_value(Sidecar::crd()), n),
        finish(serde_json::to_value(PeerAuthentication::crd()), s),
        finish(serde_json::to_value(AuthorizationPolicy::crd()), s),
        finish(
            serde_json::to_value(Telemetry::crd()),
            &telemetry::VERSIONS[..],
        ),
        finish(
            serde_json::to_value(ServiceMeshControlPlane::crd()),
            &maistra::smcp::VERSIONS[..],
        ),
        finish(serde_json::to_value(ServiceMeshMemberRoll::crd()), &["v1"]),
        finish(serde_json::to_value(ServiceMeshMember::crd()), &["v1"]),
        finish(serde_json::to_value(GatewayClass::crd()), g("GatewayClass")),
        finish(
            serde_json::to_value(gatewayapi::Gateway::crd()),
            g("Gateway"),
        ),
        finish(serde_json::to_value(HTTPRoute::crd()), g("HTTPRoute")),
        finish(serde_json::to_value(GRPCRoute::crd()), g("GRPCRoute")),
        finish(serde_json::to_value(TLSRoute::crd()), g("TLSRoute")),
        finish(serde_json::to_value(TCPRoute::crd()), g("TCPRoute")),
        finish(
            serde_json::to_value(ReferenceGrant::crd()),
            g("ReferenceGrant"),
        ),
    ]
}

/// The schema of one kind's `spec` as generated (before unknown-field preservation),
/// used by validation to find fields the types do not know.
pub fn spec_schema(kind: &str) -> Option<Value> {
    let crd = match kind {
        "VirtualService" => serde_json::to_value(VirtualService::crd()),
        "DestinationRule" => serde_json::to_value(DestinationRule::crd()),
        "Gateway" => serde_json::to_value(Gateway::crd()),
        "ServiceEntry" => serde_json::to_value(ServiceEntry::crd()),
        "Sidecar" => serde_json::to_value(Sidecar::crd()),
        "PeerAuthentication" => serde_json::to_value(PeerAuthentication::crd()),
        "AuthorizationPolicy" => serde_json::to_value(AuthorizationPolicy::crd()),
        "Telemetry" => serde_json::to_value(Telemetry::crd()),
        "ServiceMeshMemberRoll" => serde_json::to_value(ServiceMeshMemberRoll::crd()),
        "ServiceMeshMember" => serde_json::to_value(ServiceMeshMember::crd()),
        "ServiceMeshControlPlane" => serde_json::to_value(ServiceMeshControlPlane::crd()),
        _ => return None,
    }
    .ok()?;
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
        .cloned()
}

fn finish(crd: Result<Value, serde_json::Error>, versions: &[&str]) -> GeneratedCrd {
    // Serializing a k8s-openapi struct into a Value cannot fail.
    let mut crd = crd.unwrap_or_default();
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(Value::Array(vs)) = crd.pointer_mut("/spec/versions") {
        if let Some(first) = vs.first().cloned() {
            let mut out = Vec::new();
            for (i, v) in versions.iter().enumerate() {
                let mut ver = first.clone();
                ver["name"] = Value::from(*v);
                ver["served"] = Value::from(true);
                ver["storage"] = Value::from(i == 0);
                if let Some(schema) = ver.pointer_mut("/schema/openAPIV3Schema/properties/spec") {
                    preserve_unknown(schema);
                }
                out.push(ver);
            }
            *vs = out;
        }
    }
    GeneratedCrd { name, body: crd }
}

fn preserve_unknown(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if map.contains_key("properties") {
        map.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
    for (_, child) in map.iter_mut() {
        match child {
            Value::Object(_) => preserve_unknown(child),
            Value::Array(items) => items.iter_mut().for_each(preserve_unknown),
            _ => {}
        }
    }
}
