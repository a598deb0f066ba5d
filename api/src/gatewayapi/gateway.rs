//! `GatewayClass` (cluster-scoped: which controller owns a class of gateways) and
//! `Gateway` (listeners: port, protocol, hostname, TLS, which routes may attach).
//! Only the shape lives here; what a Gateway becomes is the translator's business.

use super::common::{Condition, ParametersReference, SecretObjectReference};
use crate::networking::common::{Extra, Labels};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a `GatewayClass`.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GatewayClass",
    plural = "gatewayclasses",
    shortname = "gc",
    status = "GatewayClassStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayClassSpec {
    pub controller_name: String,
    pub parameters_ref: Option<ParametersReference>,
    pub description: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Status of a `GatewayClass`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayClassStatus {
    pub conditions: Vec<Condition>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Spec of a Gateway API `Gateway` (not Istio's `networking.istio.io` Gateway).
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    shortname = "gtw",
    namespaced,
    status = "GatewayStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySpec {
    pub gateway_class_name: String,
    pub listeners: Vec<Listener>,
    pub addresses: Vec<GatewayAddress>,
    pub infrastructure: Option<GatewayInfrastructure>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// One listener: a (port, protocol, hostname) the gateway accepts traffic on.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Listener {
    pub name: String,
    pub hostname: Option<String>,
    pub port: i32,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP`, or a domain-prefixed custom protocol.
    pub protocol: String,
    pub tls: Option<GatewayTlsConfig>,
    pub allowed_routes: Option<AllowedRoutes>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Standard listener protocols.
pub mod protocol {
    pub const HTTP: &str = "HTTP";
    pub const HTTPS: &str = "HTTPS";
    pub const TLS: &str = "TLS";
    pub const TCP: &str = "TCP";
    pub const UDP: &str = "UDP";
}

/// Whether a listener terminates TLS or passes it through by SNI.
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
pub enum TlsMode {
    #[default]
    Terminate,
    Passthrough,
}

/// A listener's TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayTlsConfig {
    pub mode: TlsMode,
    pub certificate_refs: Vec<SecretObjectReference>,
    pub options: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Which routes may attach to a listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AllowedRoutes {
    pub namespaces: RouteNamespaces,
    pub kinds: Vec<RouteGroupKind>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// From which namespaces routes may attach (default: the Gateway's own).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteNamespaces {
    pub from: FromNamespaces,
    pub selector: Option<LabelSelector>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `Same` (default), `All`, or `Selector` (namespaces matching `selector`).
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
pub enum FromNamespaces {
    #[default]
    Same,
    All,
    Selector,
}

fn gateway_group() -> String {
    super::common::GROUP.to_string()
}

/// A route kind a listener accepts (group default `gateway.networking.k8s.io`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    #[serde(default = "gateway_group")]
    pub group: String,
    #[serde(default)]
    pub kind: String,
}

impl Default for RouteGroupKind {
    fn default() -> Self {
        Self {
            group: gateway_group(),
            kind: String::new(),
        }
    }
}

fn ip_address() -> String {
    "IPAddress".to_string()
}

/// A requested (spec) or assigned (status) address; type default `IPAddress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddress {
    /// `IPAddress`, `Hostname`, `NamedAddress`, or domain-prefixed.
    #[serde(rename = "type", default = "ip_address")]
    pub type_: String,
    #[serde(default)]
    pub value: String,
}

impl Default for GatewayAddress {
    fn default() -> Self {
        Self {
            type_: ip_address(),
            value: String::new(),
        }
    }
}

/// Labels/annotations for the resources a controller creates for the Gateway.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayInfrastructure {
    pub labels: Labels,
    pub annotations: Labels,
    pub parameters_ref: Option<super::common::LocalObjectReference>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Status of a `Gateway`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayStatus {
    pub addresses: Vec<GatewayAddress>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

/// Status of one listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub attached_routes: i32,
    pub conditions: Vec<Condition>,
}
