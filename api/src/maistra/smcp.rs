//! `maistra.io/v2` ServiceMeshControlPlane: the subset we map onto the mesh config.
//!
//! OpenShift Service Mesh's schema is huge (add-on installs, per-component
//! runtime tuning, cluster federation, ...). Users paste their whole SMCP, so
//! every field is accepted: the parts that mean something to this mesh are
//! typed and checked ([`SmcpSpec::validate`] in [`super::smcp_check`]);
//! everything else is kept in the `extra` maps (and preserved by the CRD
//! schema) and listed by [`super::smcp_check::field_report`] as ignored, one path per field, so `meshctl analyze` and the
//! SMCP status can say exactly what did not take effect.
//!
//! Semantics follow OSSM 2.x: `tracing.sampling` is in 0.01 % steps
//! (0–10000), `tracing.type` is `None` or `Jaeger` (we also take `Zipkin`, the
//! wire format Jaeger's collector speaks to us), gateways are on unless
//! `enabled: false`. [`crate::maistra::smcp_map`] turns a checked spec into
//! objects and mesh config.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::networking::common::Extra;

/// API group of the OSSM control-plane resource.
pub const GROUP: &str = "maistra.io";
/// Versions served, storage version first.
pub const VERSIONS: [&str; 1] = ["v2"];

/// A bad SMCP value: the field path (`spec.tracing.sampling`), the value, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ServiceMeshControlPlane field {field}: {value:?} {reason}")]
pub struct SmcpError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

pub(crate) fn bad(field: &str, value: impl ToString, reason: impl Into<String>) -> SmcpError {
    SmcpError {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Spec of a `ServiceMeshControlPlane`.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "maistra.io",
    version = "v2",
    kind = "ServiceMeshControlPlane",
    plural = "servicemeshcontrolplanes",
    shortname = "smcp",
    namespaced,
    status = "SmcpStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpSpec {
    /// OSSM version (`v2.5`): recorded, not a switch here.
    pub version: Option<String>,
    pub tracing: Option<SmcpTracing>,
    pub proxy: Option<SmcpProxy>,
    pub gateways: Option<SmcpGateways>,
    pub security: Option<SmcpSecurity>,
    pub addons: Option<SmcpAddons>,
    /// `telemetry`, `policy`, `runtime`, `general`, `profiles`, `cluster`, ...:
    /// accepted and reported as ignored.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Schema of a kept-as-is object (structural: unknown fields preserved).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "nullable": true, "x-kubernetes-preserve-unknown-fields": true})
}

fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"x-kubernetes-int-or-string": true, "nullable": true})
}

fn int_or_string_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "nullable": true, "items": {"x-kubernetes-int-or-string": true}})
}

/// `spec.tracing`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpTracing {
    /// `None`, `Jaeger` (OSSM's default) or `Zipkin`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// 0–10000 in 0.01 % steps (10000 = every request).
    pub sampling: Option<i64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `spec.proxy`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpProxy {
    pub access_logging: Option<SmcpAccessLogging>,
    pub networking: Option<SmcpProxyNetworking>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpAccessLogging {
    pub file: Option<SmcpAccessLogFile>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `spec.proxy.accessLogging.file`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpAccessLogFile {
    /// `/dev/stdout` (the proxy's stdout is where the log goes here).
    pub name: Option<String>,
    /// `TEXT` or `JSON`.
    pub encoding: Option<String>,
    /// Envoy `%COMMAND%` format.
    pub format: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpProxyNetworking {
    pub traffic_control: Option<SmcpTrafficControl>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpTrafficControl {
    pub inbound: Option<SmcpInbound>,
    pub outbound: Option<SmcpOutbound>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `spec.proxy.networking.trafficControl.inbound`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpInbound {
    /// `["*"]` or port numbers (OSSM writes them as strings).
    #[schemars(schema_with = "int_or_string_list")]
    pub included_ports: Option<Vec<Value>>,
    #[schemars(schema_with = "int_or_string_list")]
    pub excluded_ports: Option<Vec<Value>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `spec.proxy.networking.trafficControl.outbound`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpOutbound {
    /// `ALLOW_ANY` or `REGISTRY_ONLY`.
    pub policy: Option<String>,
    /// CIDRs, or `["*"]` for all.
    #[serde(rename = "includedIPRanges")]
    pub included_ip_ranges: Option<Vec<String>>,
    #[serde(rename = "excludedIPRanges")]
    pub excluded_ip_ranges: Option<Vec<String>>,
    #[schemars(schema_with = "int_or_string_list")]
    pub excluded_ports: Option<Vec<Value>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `spec.gateways`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpGateways {
    /// `false` turns every gateway off.
    pub enabled: Option<bool>,
    pub ingress: Option<SmcpGateway>,
    pub egress: Option<SmcpGateway>,
    /// OpenShift Routes for Gateway hosts: accepted, not created here.
    #[schemars(schema_with = "any_object")]
    pub openshift_route: Option<Value>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `spec.gateways.ingress` / `egress`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpGateway {
    pub enabled: Option<bool>,
    pub service: Option<SmcpGatewayService>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// The gateway's Service settings.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpGatewayService {
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    /// `Cluster` or `Local`.
    pub external_traffic_policy: Option<String>,
    /// Replaces the default ports (15021, 80→8080, 443→8443) when given.
    pub ports: Option<Vec<SmcpServicePort>>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpServicePort {
    pub name: Option<String>,
    pub port: i64,
    #[schemars(schema_with = "int_or_string")]
    pub target_port: Option<Value>,
    pub protocol: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `spec.security`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpSecurity {
    pub data_plane: Option<SmcpDataPlane>,
    /// OSSM's default is true: membership creates NetworkPolicies.
    pub manage_network_policy: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpDataPlane {
    /// true: a mesh-wide STRICT PeerAuthentication; false: PERMISSIVE.
    pub mtls: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `spec.addons`: Kiali, Grafana, Prometheus and Jaeger installs are OSSM
/// operator work; only `jaeger.name` (the collector's service) is read here.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpAddons {
    pub jaeger: Option<SmcpJaeger>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpJaeger {
    /// Name of the Jaeger instance; its collector Service is `<name>-collector`.
    pub name: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `status` of an SMCP, written by the agent.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpStatus {
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<SmcpCondition>,
    /// Spec paths that took effect.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub applied_fields: Vec<String>,
    /// Spec paths accepted but not applied by this mesh.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<String>,
}

/// One status condition (`Reconciled`, `Ready`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SmcpCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: Option<String>,
}
