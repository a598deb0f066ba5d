//! The per-proxy view the config-sync stream carries: [`ProxyView`] and the
//! services, endpoints and inbound policy in it. Its own file so that
//! `syncdelta` can use the view without importing the messages of `syncapi`
//! (which carry a `syncdelta::ViewDelta`); `syncapi` re-exports every type.

use crate::gatewayview::GatewayView;
use crate::networking::{DestinationRuleSpec, VirtualServiceSpec};
use crate::security::AuthorizationPolicySpec;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything one proxy needs, at one mesh version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyView {
    pub version: u64,
    /// Services the proxy may call, sorted by hostname. Shared: the agent's
    /// views point at its registry's services, not copies of them.
    pub services: Vec<Arc<Service>>,
    /// VirtualServices that apply to the proxy's visible hosts, keyed by `namespace/name`.
    pub virtual_services: BTreeMap<String, VirtualServiceSpec>,
    /// DestinationRules for visible hosts, keyed by host (the one Istio would pick).
    pub destination_rules: BTreeMap<String, DestinationRuleSpec>,
    /// `REGISTRY_ONLY` or `ALLOW_ANY`.
    pub outbound_traffic_policy: String,
    /// Policy for traffic arriving at the proxy's own workload.
    pub inbound: InboundPolicy,
    /// For a gateway proxy (`router`): its listeners, servers and bound routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayView>,
    /// Trace context propagation and span export; `None`: tracing off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<crate::tracing::TracingView>,
    /// Access log on stdout (`meshConfig.accessLogFile`); `None`: no access log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<crate::accesslog::AccessLogView>,
    /// The agent serves lookups (`--visibility on-demand`): a destination not
    /// in this view is asked about before it is treated as outside the mesh.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
}

/// A service of the registry: a Kubernetes Service or a ServiceEntry host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Service {
    /// Fully qualified: `name.namespace.svc.<domain>` or the ServiceEntry host.
    pub hostname: String,
    pub namespace: String,
    /// `Kubernetes` or `ServiceEntry`.
    pub origin: String,
    #[serde(deserialize_with = "exact_vec")]
    pub addresses: Vec<String>,
    #[serde(deserialize_with = "exact_vec")]
    pub ports: Vec<ServicePort>,
    #[serde(deserialize_with = "exact_vec")]
    pub endpoints: Vec<Endpoint>,
    /// `exportTo` as written (empty: mesh default, public).
    pub export_to: Vec<String>,
    /// For ServiceEntries: `MESH_EXTERNAL`/`MESH_INTERNAL` and the resolution.
    pub location: Option<String>,
    pub resolution: Option<String>,
    /// Identities the service's workloads run as (full SPIFFE URIs, sorted): the
    /// service accounts of its endpoints, plus a ServiceEntry's `subjectAltNames`.
    /// A client's mTLS accepts a server only if it presents one of them.
    pub subject_alt_names: Vec<String>,
}

/// A list decoded without spare capacity. JSON gives no length up front, so a
/// decoded `Vec` grows by doubling: ten endpoints sit in room for sixteen, and
/// a sidecar keeps every service of its view for as long as it runs on it.
fn exact_vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let mut v = Vec::<T>::deserialize(d)?;
    v.shrink_to_fit();
    Ok(v)
}

/// A port of a service with its protocol as Istio derives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: Option<u16>,
    /// `HTTP`, `HTTP2`, `GRPC`, `HTTPS`, `TLS`, `TCP`, `MONGO`, `REDIS`, `MYSQL` or `UDP`;
    /// unknown names give `TCP` with protocol sniffing left to the proxy (`UNKNOWN`).
    pub protocol: String,
}

/// One backend of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoint {
    pub address: String,
    /// Service port name → the endpoint's port.
    pub ports: crate::portmap::PortMap,
    pub labels: BTreeMap<String, String>,
    /// `region/zone/subzone`, empty when unknown. Shared within a decoded
    /// view, as the service account is (see [`crate::sharedstr`]).
    pub locality: crate::sharedstr::SharedStr,
    pub ready: bool,
    pub service_account: Option<crate::sharedstr::SharedStr>,
}

/// Inbound policy of the proxy's workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InboundPolicy {
    /// Effective mTLS mode: `STRICT`, `PERMISSIVE` or `DISABLE`.
    pub mtls_mode: String,
    /// Port → mode overrides. Keys travel as strings: integer map keys do not
    /// survive the buffering of the internally tagged
    /// [`AgentMessage`](crate::syncapi::AgentMessage).
    #[serde(with = "port_keys")]
    pub port_mtls: BTreeMap<u16, String>,
    /// AuthorizationPolicies selecting the workload, keyed by `namespace/name`.
    pub authorization: BTreeMap<String, AuthorizationPolicySpec>,
}

mod port_keys {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(m: &BTreeMap<u16, String>, s: S) -> Result<S::Ok, S::Error> {
        m.iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<String, &String>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u16, String>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                k.parse::<u16>().map(|p| (p, v)).map_err(|_| {
                    serde::de::Error::custom(format!("port {k:?} is not a port number"))
                })
            })
            .collect()
    }
}
