//! The Kubernetes Gateway API (`gateway.networking.k8s.io`): GatewayClass, Gateway,
//! HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and ReferenceGrant, for ingress and for
//! mesh (GAMMA) routes whose parent is a Service. This module is the vocabulary:
//! types, version handling ([`parse`]), the schema/CEL rules ([`validate`]) and
//! the ReferenceGrant decision ([`referencegrant::permits`]). Translation to our
//! Istio objects lives elsewhere.
//!
//! Store keys: the Gateway API `Gateway` would collide with Istio's `Gateway`, so
//! its [`ResourceKey`] kind is `Gateway.gateway.networking.k8s.io` (kubectl's
//! `kind.group` spelling); the other kinds keep their plain names. GatewayClass is
//! cluster-scoped: its key's namespace is empty.

pub mod common;
pub mod deploy;
mod findings;
pub mod gateway;
pub mod grpcroute;
pub mod httproute;
mod kinds;
pub mod referencegrant;
pub mod tlsroute;
pub mod validate;
mod validate_grpc;
mod validate_route;
#[cfg(test)]
mod validate_route_tests;
#[cfg(test)]
mod validate_tests;

#[cfg(test)]
mod tests;

pub use common::*;
pub use gateway::{Gateway, GatewayClass, GatewayClassSpec, GatewaySpec};
pub use grpcroute::{GRPCRoute, GRPCRouteSpec};
pub use httproute::{HTTPRoute, HTTPRouteSpec};
pub use kinds::{key_kind, GatewayApiResource, GATEWAY_KEY_KIND};
pub use referencegrant::{permits, RefFrom, RefTo, ReferenceGrant, ReferenceGrantSpec};
pub use tlsroute::{TCPRoute, TCPRouteSpec, TLSRoute, TLSRouteSpec};
pub use validate::validate;

use crate::resource::{decode, ParseError, ResourceKey};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The kinds handled, in CRD generation order.
pub const KINDS: [&str; 7] = [
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "TCPRoute",
    "ReferenceGrant",
];

/// Served versions per kind; the first is the storage version and the one the
/// agent watches.
pub fn versions(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "GatewayClass" | "Gateway" | "HTTPRoute" => &["v1", "v1beta1"],
        "GRPCRoute" => &["v1", "v1alpha2"],
        "ReferenceGrant" => &["v1beta1", "v1", "v1alpha2"],
        "TLSRoute" => &["v1alpha2", "v1alpha3", "v1"],
        "TCPRoute" => &["v1alpha2", "v1"],
        _ => return None,
    })
}

/// Parses a Kubernetes object. `Ok(None)` when its group is not
/// `gateway.networking.k8s.io` or its kind is one we do not handle (e.g.
/// `UDPRoute`); an error when the apiVersion is not served or a field is malformed
/// (naming the field path). `status` is not read: the controller owns it.
pub fn parse(obj: &serde_json::Value) -> Result<Option<GatewayApiResource>, ParseError> {
    let api_version = obj.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = obj.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    let Some((GROUP, version)) = api_version.split_once('/') else {
        return Ok(None);
    };
    let Some(served) = versions(kind) else {
        return Ok(None);
    };
    let meta_json = obj.get("metadata").cloned().unwrap_or_default();
    let name = meta_json
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    if !served.contains(&version) {
        return Err(ParseError::Version {
            kind: kind.into(),
            name,
            api_version: api_version.into(),
            accepted: served
                .iter()
                .map(|v| format!("{GROUP}/{v}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let namespace = if kind == "GatewayClass" {
        String::new()
    } else {
        meta_json
            .get("namespace")
            .and_then(|v| v.as_str())
            .unwrap_or("default")
            .to_string()
    };
    let key = ResourceKey {
        kind: key_kind(kind).into(),
        namespace,
        name,
    };
    let metadata: ObjectMeta = decode(&key, "metadata", meta_json)?;
    let spec = obj
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Object(Default::default()));
    macro_rules! build {
        ($variant:ident, $ty:ty) => {{
            let mut r = <$ty>::new("", decode(&key, "spec", spec)?);
            r.metadata = metadata;
            GatewayApiResource::$variant(Box::new(r))
        }};
    }
    Ok(Some(match kind {
        "GatewayClass" => build!(GatewayClass, GatewayClass),
        "Gateway" => build!(Gateway, Gateway),
        "HTTPRoute" => build!(HTTPRoute, HTTPRoute),
        "GRPCRoute" => build!(GRPCRoute, GRPCRoute),
        "TLSRoute" => build!(TLSRoute, TLSRoute),
        "TCPRoute" => build!(TCPRoute, TCPRoute),
        _ => build!(ReferenceGrant, ReferenceGrant),
    }))
}
