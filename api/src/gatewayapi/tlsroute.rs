//! `TLSRoute` (SNI-routed TLS passthrough or terminated streams) and `TCPRoute`
//! (plain TCP forwarding): both served at `v1alpha2`, rules are weighted backends.

use super::common::{BackendRef, ParentReference, RouteStatus};
use crate::networking::common::Extra;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a `TLSRoute`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1alpha2",
    kind = "TLSRoute",
    plural = "tlsroutes",
    namespaced,
    status = "RouteStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct TLSRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    /// SNI names matched (wildcard only as the leftmost label).
    pub hostnames: Vec<String>,
    pub rules: Vec<StreamRouteRule>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Spec of a `TCPRoute`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1alpha2",
    kind = "TCPRoute",
    plural = "tcproutes",
    namespaced,
    status = "RouteStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct TCPRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub rules: Vec<StreamRouteRule>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A TLSRoute/TCPRoute rule: where the stream goes (weighted).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct StreamRouteRule {
    pub name: Option<String>,
    pub backend_refs: Vec<BackendRef>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}
