//! `GRPCRoute`: gRPC routing by service/method and headers, with header-modifier,
//! mirror and extension filters, attached to Gateways or Services.

use super::common::{
    BackendObjectReference, BackendRef, HTTPHeaderFilter, HTTPHeaderMatch, HTTPRequestMirrorFilter,
    LocalObjectReference, ParentReference, RouteStatus,
};
use crate::networking::common::Extra;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a `GRPCRoute`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GRPCRoute",
    plural = "grpcroutes",
    namespaced,
    status = "RouteStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct GRPCRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub hostnames: Vec<String>,
    pub rules: Vec<GRPCRouteRule>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// One rule; no matches means every gRPC request.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GRPCRouteRule {
    pub name: Option<String>,
    pub matches: Vec<GRPCRouteMatch>,
    pub filters: Vec<GRPCRouteFilter>,
    pub backend_refs: Vec<GRPCBackendRef>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Method and header conditions (ANDed).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GRPCRouteMatch {
    pub method: Option<GRPCMethodMatch>,
    pub headers: Vec<HTTPHeaderMatch>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// How service and method are compared.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum GRPCMethodMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// Matches `/<service>/<method>`; either part may be omitted (matches any).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GRPCMethodMatch {
    #[serde(rename = "type")]
    pub type_: GRPCMethodMatchType,
    pub service: Option<String>,
    pub method: Option<String>,
}

/// Which filter a [`GRPCRouteFilter`] is.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum GRPCRouteFilterType {
    #[default]
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestMirror,
    ExtensionRef,
}

/// A GRPCRoute filter; exactly the field named by `type` is set.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GRPCRouteFilter {
    #[serde(rename = "type")]
    pub type_: GRPCRouteFilterType,
    pub request_header_modifier: Option<HTTPHeaderFilter>,
    pub response_header_modifier: Option<HTTPHeaderFilter>,
    pub request_mirror: Option<HTTPRequestMirrorFilter>,
    pub extension_ref: Option<LocalObjectReference>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A weighted backend with its own filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GRPCBackendRef {
    #[serde(default)]
    pub filters: Vec<GRPCRouteFilter>,
    #[serde(flatten)]
    pub backend: BackendRef,
}

impl GRPCBackendRef {
    /// The referenced object (without weight and filters).
    pub fn object(&self) -> BackendObjectReference {
        self.backend.object()
    }
}
