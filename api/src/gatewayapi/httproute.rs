//! `HTTPRoute`: HTTP routing rules (matches, filters, weighted backends, timeouts,
//! retries) attached to Gateways or, for mesh traffic, to Services. Defaults the
//! upstream schema applies (a rule without matches matches `PathPrefix /`, a match
//! without a path likewise) are applied by serde so the translator sees them.

use super::common::{
    BackendObjectReference, BackendRef, HTTPHeaderFilter, HTTPHeaderMatch, HTTPRequestMirrorFilter,
    LocalObjectReference, ParentReference, RouteStatus,
};
use crate::networking::common::Extra;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of an `HTTPRoute`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    status = "RouteStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub hostnames: Vec<String>,
    #[serde(default = "default_rules")]
    pub rules: Vec<HTTPRouteRule>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Upstream default: one rule matching everything (`PathPrefix /`) with no backends.
fn default_rules() -> Vec<HTTPRouteRule> {
    vec![HTTPRouteRule::default()]
}

/// One routing rule.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    #[serde(default)]
    pub name: Option<String>,
    /// ORed; defaults to one match of `PathPrefix /`.
    #[serde(default = "default_matches")]
    pub matches: Vec<HTTPRouteMatch>,
    #[serde(default)]
    pub filters: Vec<HTTPRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<HTTPBackendRef>,
    #[serde(default)]
    pub timeouts: Option<HTTPRouteTimeouts>,
    #[serde(default)]
    pub retry: Option<HTTPRouteRetry>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for HTTPRouteRule {
    fn default() -> Self {
        Self {
            name: None,
            matches: default_matches(),
            filters: Vec::new(),
            backend_refs: Vec::new(),
            timeouts: None,
            retry: None,
            extra: Extra::new(),
        }
    }
}

fn default_matches() -> Vec<HTTPRouteMatch> {
    vec![HTTPRouteMatch::default()]
}

/// Conditions a request must meet (ANDed).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPRouteMatch {
    /// Defaults to `PathPrefix /`.
    pub path: HTTPPathMatch,
    pub headers: Vec<HTTPHeaderMatch>,
    pub query_params: Vec<HTTPQueryParamMatch>,
    /// `GET`, `POST`, ... (upper case).
    pub method: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// How the request path is compared.
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
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

fn slash() -> String {
    "/".to_string()
}

/// Path match; type default `PathPrefix`, value default `/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPathMatch {
    #[serde(rename = "type", default)]
    pub type_: PathMatchType,
    #[serde(default = "slash")]
    pub value: String,
}

impl Default for HTTPPathMatch {
    fn default() -> Self {
        Self {
            type_: PathMatchType::PathPrefix,
            value: slash(),
        }
    }
}

/// Matches one query parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPQueryParamMatch {
    #[serde(rename = "type")]
    pub type_: super::common::HeaderMatchType,
    pub name: String,
    pub value: String,
}

/// Which filter a [`HTTPRouteFilter`] is; exactly the matching field must be set.
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
pub enum HTTPRouteFilterType {
    #[default]
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestMirror,
    RequestRedirect,
    URLRewrite,
    ExtensionRef,
}

/// A request/response transformation applied by a rule or one backend.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPRouteFilter {
    #[serde(rename = "type")]
    pub type_: HTTPRouteFilterType,
    pub request_header_modifier: Option<HTTPHeaderFilter>,
    pub response_header_modifier: Option<HTTPHeaderFilter>,
    pub request_mirror: Option<HTTPRequestMirrorFilter>,
    pub request_redirect: Option<HTTPRequestRedirectFilter>,
    #[serde(rename = "urlRewrite")]
    pub url_rewrite: Option<HTTPURLRewriteFilter>,
    pub extension_ref: Option<LocalObjectReference>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

fn found() -> i32 {
    302
}

/// `RequestRedirect` filter body; status code default 302.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRequestRedirectFilter {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<HTTPPathModifier>,
    #[serde(default)]
    pub port: Option<i32>,
    #[serde(default = "found")]
    pub status_code: i32,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for HTTPRequestRedirectFilter {
    fn default() -> Self {
        Self {
            scheme: None,
            hostname: None,
            path: None,
            port: None,
            status_code: found(),
            extra: Extra::new(),
        }
    }
}

/// `URLRewrite` filter body.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPURLRewriteFilter {
    pub hostname: Option<String>,
    pub path: Option<HTTPPathModifier>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// How a redirect or rewrite changes the path.
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
pub enum HTTPPathModifierType {
    #[default]
    ReplaceFullPath,
    ReplacePrefixMatch,
}

/// Path modifier: exactly the field named by `type` is set.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPPathModifier {
    #[serde(rename = "type")]
    pub type_: HTTPPathModifierType,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

/// A weighted backend with its own filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPBackendRef {
    #[serde(default)]
    pub filters: Vec<HTTPRouteFilter>,
    #[serde(flatten)]
    pub backend: BackendRef,
}

impl HTTPBackendRef {
    /// The referenced object (without weight and filters).
    pub fn object(&self) -> BackendObjectReference {
        self.backend.object()
    }
}

/// Rule timeouts (Gateway API durations, e.g. `10s`, `1m30s`, `500ms`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPRouteTimeouts {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

/// Rule retry policy (GEP-1731).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPRouteRetry {
    pub codes: Vec<i32>,
    pub attempts: Option<i32>,
    pub backoff: Option<String>,
}
