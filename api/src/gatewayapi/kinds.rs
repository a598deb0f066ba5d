//! [`GatewayApiResource`], a parsed object of any supported kind, and the
//! store-key kind of each kind. Its own file so that `validate` can take a
//! resource without importing the parent module, which re-exports `validate`.

use super::gateway::{Gateway, GatewayClass};
use super::grpcroute::GRPCRoute;
use super::httproute::HTTPRoute;
use super::referencegrant::ReferenceGrant;
use super::tlsroute::{TCPRoute, TLSRoute};
use crate::resource::ResourceKey;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The store-key kind of a Gateway API `Gateway` (distinct from Istio's `Gateway`).
pub const GATEWAY_KEY_KIND: &str = "Gateway.gateway.networking.k8s.io";

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
