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
pub mod gateway;
pub mod grpcroute;
pub mod httproute;
pub mod referencegrant;
pub mod tlsroute;
pub mod validate;
mod validate_grpc;
mod validate_route;
#[cfg(test)]
mod validate_tests;

#[cfg(test)]
mod tests;

pub use common::*;
pub use gateway::{Gateway, GatewayClass, GatewayClassSpec, GatewaySpec};
pub use grpcroute::{GRPCRoute, GRPCRouteSpec};
pub use httproute::{HTTPRoute, HTTPRouteSpec};
pub use referencegrant::{permits, RefFrom, RefTo, ReferenceGrant, ReferenceGrantSpec};
pub use tlsroute::{TCPRoute, TCPRouteSpec, TLSRoute, TLSRouteSpec};
pub use validate::validate;

use crate::resource::{decode, ParseError, ResourceKey};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The store-key kind of a Gateway API `Gateway` (distinct from Istio's `Gateway`).
pub const GATEWAY_KEY_KIND: &str = "Gateway.gateway.networking.k8s.io";

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

/// A parsed Gateway API object of any supported kind.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayApiResource {
    GatewayClass(Box<GatewayClass>),
    Gateway(Box<Gateway>),
    HTTPRoute(Box<HTTPRoute>),
    GRPCRoute(Box<GRPCRoute>),
    TLSRoute(Box<TLSRoute>),
    TCPRoute(Box<TCPRoute>),
    ReferenceGrant(Box<ReferenceGrant>),
}

impl GatewayApiResource {
    /// The Kubernetes kind, e.g. `HTTPRoute` (plain `Gateway` for the Gateway).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::GatewayClass(_) => "GatewayClass",
            Self::Gateway(_) => "Gateway",
            Self::HTTPRoute(_) => "HTTPRoute",
            Self::GRPCRoute(_) => "GRPCRoute",
            Self::TLSRoute(_) => "TLSRoute",
            Self::TCPRoute(_) => "TCPRoute",
            Self::ReferenceGrant(_) => "ReferenceGrant",
        }
    }

    /// The kind as used in store keys and messages (see the module docs).
    pub fn key_kind(&self) -> &'static str {
        key_kind(self.kind())
    }

    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::GatewayClass(r) => &r.metadata,
            Self::Gateway(r) => &r.metadata,
            Self::HTTPRoute(r) => &r.metadata,
            Self::GRPCRoute(r) => &r.metadata,
            Self::TLSRoute(r) => &r.metadata,
            Self::TCPRoute(r) => &r.metadata,
            Self::ReferenceGrant(r) => &r.metadata,
        }
    }

    /// `kind/namespace/name` with the collision-free kind; a missing namespace
    /// reads as `default`, except for the cluster-scoped GatewayClass (empty).
    pub fn key(&self) -> ResourceKey {
        let m = self.meta();
        ResourceKey {
            kind: self.key_kind().to_string(),
            namespace: if matches!(self, Self::GatewayClass(_)) {
                String::new()
            } else {
                m.namespace.clone().unwrap_or_else(|| "default".into())
            },
            name: m.name.clone().unwrap_or_default(),
        }
    }

    /// The object's metadata, mutable (sources trim what the agent never reads).
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::GatewayClass(r) => &mut r.metadata,
            Self::Gateway(r) => &mut r.metadata,
            Self::HTTPRoute(r) => &mut r.metadata,
            Self::GRPCRoute(r) => &mut r.metadata,
            Self::TLSRoute(r) => &mut r.metadata,
            Self::TCPRoute(r) => &mut r.metadata,
            Self::ReferenceGrant(r) => &mut r.metadata,
        }
    }

    /// The object's `spec` as JSON (hashing, debug output).
    pub fn spec_json(&self) -> serde_json::Value {
        let v = match self {
            Self::GatewayClass(r) => serde_json::to_value(&r.spec),
            Self::Gateway(r) => serde_json::to_value(&r.spec),
            Self::HTTPRoute(r) => serde_json::to_value(&r.spec),
            Self::GRPCRoute(r) => serde_json::to_value(&r.spec),
            Self::TLSRoute(r) => serde_json::to_value(&r.spec),
            Self::TCPRoute(r) => serde_json::to_value(&r.spec),
            Self::ReferenceGrant(r) => serde_json::to_value(&r.spec),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// The store-key kind for a Kubernetes kind of this group.
pub fn key_kind(kind: &str) -> &'static str {
    match kind {
        "Gateway" => GATEWAY_KEY_KIND,
        "GatewayClass" => "GatewayClass",
        "HTTPRoute" => "HTTPRoute",
        "GRPCRoute" => "GRPCRoute",
        "TLSRoute" => "TLSRoute",
        "TCPRoute" => "TCPRoute",
        "ReferenceGrant" => "ReferenceGrant",
        _ => "",
    }
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
