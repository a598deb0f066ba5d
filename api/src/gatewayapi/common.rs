//! Types shared by several Gateway API kinds (`gateway.networking.k8s.io`): object
//! references (parents, backends, secrets), route status and conditions, the HTTP
//! header vocabulary used by HTTPRoute and GRPCRoute, and the well-known constants
//! (group, controller and class names, condition types and reasons).
//!
//! Defaults the upstream schema applies on admission (parent kind `Gateway`, backend
//! kind `Service`, weight 1, ...) are applied here by serde too, so objects loaded
//! from files read the same as objects that went through the API server.

use crate::networking::common::Extra;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Gateway API kind.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The `controllerName` our GatewayClasses carry (Istio's, so existing classes work).
pub const CONTROLLER_NAME: &str = "istio.io/gateway-controller";
/// The GatewayClass name Istio users already use.
pub const CLASS_ISTIO: &str = "istio";
/// Our own alias class, handled exactly like `istio` (for clusters where a real
/// Istio may also own the `istio` class).
pub const CLASS_MESH: &str = "mesh";
/// The class of waypoint-style mesh gateways Istio defines; recognised, not deployed.
pub const CLASS_ISTIO_WAYPOINT: &str = "istio-waypoint";

/// Well-known condition types.
pub mod condition {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const CONFLICTED: &str = "Conflicted";
    pub const READY: &str = "Ready";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";
}

/// Well-known condition reasons.
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const PENDING: &str = "Pending";
    pub const INVALID: &str = "Invalid";
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";
    pub const ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
    pub const ADDRESS_NOT_USABLE: &str = "AddressNotUsable";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const UNSUPPORTED_PROTOCOL_BACKEND: &str = "UnsupportedProtocol";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const NOT_RECONCILED: &str = "NotReconciled";
}

fn gateway_group() -> String {
    GROUP.to_string()
}
fn gateway_kind() -> String {
    "Gateway".to_string()
}
fn service_kind() -> String {
    "Service".to_string()
}
fn secret_kind() -> String {
    "Secret".to_string()
}
fn one() -> i32 {
    1
}

/// A route's attachment point: a Gateway (optionally one listener / port) or, for
/// mesh (GAMMA) routes, a Service (`group: ""`, `kind: Service`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default = "gateway_group")]
    pub group: String,
    #[serde(default = "gateway_kind")]
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub section_name: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for ParentReference {
    fn default() -> Self {
        Self {
            group: gateway_group(),
            kind: gateway_kind(),
            namespace: None,
            name: String::new(),
            section_name: None,
            port: None,
            extra: Extra::new(),
        }
    }
}

impl ParentReference {
    /// True when this parent is a Service (a GAMMA mesh route), not a Gateway.
    pub fn is_service(&self) -> bool {
        self.group.is_empty() && self.kind == "Service"
    }
}

/// A reference to a backend object (default: a core `Service` in the route's namespace).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    #[serde(default)]
    pub group: String,
    #[serde(default = "service_kind")]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for BackendObjectReference {
    fn default() -> Self {
        Self {
            group: String::new(),
            kind: service_kind(),
            name: String::new(),
            namespace: None,
            port: None,
            extra: Extra::new(),
        }
    }
}

/// A weighted backend of a route rule (TLSRoute, TCPRoute; HTTP/GRPC add filters).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default)]
    pub group: String,
    #[serde(default = "service_kind")]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
    /// Relative share of traffic, 0..=1_000_000; 0 means "no traffic".
    #[serde(default = "one")]
    pub weight: i32,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for BackendRef {
    fn default() -> Self {
        Self {
            group: String::new(),
            kind: service_kind(),
            name: String::new(),
            namespace: None,
            port: None,
            weight: 1,
            extra: Extra::new(),
        }
    }
}

impl BackendRef {
    /// The referenced object without the weight.
    pub fn object(&self) -> BackendObjectReference {
        BackendObjectReference {
            group: self.group.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            port: self.port,
            extra: Extra::new(),
        }
    }

    /// True for the default kind: a core Service.
    pub fn is_service(&self) -> bool {
        self.group.is_empty() && self.kind == "Service"
    }
}

/// A reference to a Secret holding a certificate (default kind `Secret`, core group).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectReference {
    #[serde(default)]
    pub group: String,
    #[serde(default = "secret_kind")]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for SecretObjectReference {
    fn default() -> Self {
        Self {
            group: String::new(),
            kind: secret_kind(),
            name: String::new(),
            namespace: None,
            extra: Extra::new(),
        }
    }
}

/// A same-namespace reference (ExtensionRef filters, GatewayClass parameters use a
/// namespaced variant, [`ParametersReference`]).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalObjectReference {
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A reference to a parameters object (GatewayClass, Gateway infrastructure).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ParametersReference {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A status condition, shaped like `metav1.Condition` (times as RFC 3339 strings).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
    pub last_transition_time: Option<String>,
}

/// Status of any route kind: one entry per parent the route references.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteStatus {
    pub parents: Vec<RouteParentStatus>,
}

/// What one controller says about a route's attachment to one parent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// How a header (or query parameter) value is compared.
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
pub enum HeaderMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// Matches one request header (HTTPRoute and GRPCRoute).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPHeaderMatch {
    #[serde(rename = "type")]
    pub type_: HeaderMatchType,
    pub name: String,
    pub value: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A header name and value (header modifier `set` / `add`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPHeader {
    pub name: String,
    pub value: String,
}

/// `RequestHeaderModifier` / `ResponseHeaderModifier` filter body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPHeaderFilter {
    pub set: Vec<HTTPHeader>,
    pub add: Vec<HTTPHeader>,
    pub remove: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `RequestMirror` filter body: where to copy requests, and how many of them.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HTTPRequestMirrorFilter {
    pub backend_ref: BackendObjectReference,
    /// 0..=100; absent (and no `fraction`) means every request.
    pub percent: Option<i32>,
    pub fraction: Option<Fraction>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

fn hundred() -> i32 {
    100
}

/// `numerator / denominator` (denominator default 100).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fraction {
    #[serde(default)]
    pub numerator: i32,
    #[serde(default = "hundred")]
    pub denominator: i32,
}

impl Default for Fraction {
    fn default() -> Self {
        Self {
            numerator: 0,
            denominator: 100,
        }
    }
}
