//! The mesh-wide settings the compiler and the views need ([`Settings`],
//! [`Visibility`]). Its own file because the compiler's parts, the Gateway API
//! translation and the config all use them, and none of them should depend on
//! the compiler itself for it.

use std::collections::BTreeSet;
use std::sync::Arc;

/// Which services a proxy sees when no Sidecar resource narrows it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Only what its namespace can reach: its own namespace, the root
    /// namespace, services exported to it by name, and the destinations of
    /// VirtualServices it sees.
    Namespace,
    /// Everything exported to it (Istio's default).
    Mesh,
    /// The namespace scope, plus every service the proxy looked up on first
    /// use (`ClientMessage::Lookup`) that Istio's rules let it see: Istio's
    /// reach at the namespace scope's cost. `mesh-agent`'s default.
    #[default]
    #[value(name = "on-demand")]
    #[serde(rename = "on-demand")]
    OnDemand,
}

/// Mesh-wide settings the compiler and views need.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// DNS suffix of Kubernetes services (`cluster.local`).
    pub domain_suffix: String,
    /// Namespace whose Sidecar/PeerAuthentication/AuthorizationPolicy apply mesh-wide.
    pub root_namespace: String,
    /// `ALLOW_ANY` or `REGISTRY_ONLY` when no Sidecar says otherwise.
    pub outbound_policy: String,
    pub visibility: Visibility,
    /// SPIFFE trust domain of the mesh identities services expect (`cluster.local`).
    pub trust_domain: String,
    /// Istio's `PILOT_SCOPE_GATEWAY_TO_NAMESPACE`: a gateway pod is configured
    /// only by Gateways of its own namespace (default: Gateways anywhere).
    pub scope_gateway_to_namespace: bool,
    /// Tracing every proxy applies, compiled from the mesh config.
    pub tracing: Option<mesh_api::tracing::TracingView>,
    /// Access log every proxy writes, from the mesh config (`accessLogFile`).
    pub access_log: Option<mesh_api::accesslog::AccessLogView>,
    /// The mesh config file, when there is one: what Telemetry resources and
    /// pod annotations resolve against (providers, proxy-config tracing).
    pub mesh: Option<Arc<mesh_api::meshconfig::MeshConfig>>,
    /// OpenShift Service Mesh multitenancy: the namespaces in the mesh (the
    /// members and the control-plane namespace). `None`: every namespace.
    /// Objects elsewhere are not compiled and proxies elsewhere get nothing.
    pub members: Option<Arc<BTreeSet<String>>>,
}

impl Settings {
    /// Is `ns` part of the mesh?
    pub fn serves(&self, ns: &str) -> bool {
        self.members.as_ref().is_none_or(|m| m.contains(ns))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            domain_suffix: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            outbound_policy: "ALLOW_ANY".into(),
            visibility: Visibility::Namespace,
            trust_domain: "cluster.local".into(),
            scope_gateway_to_namespace: false,
            tracing: None,
            access_log: None,
            mesh: None,
            members: None,
        }
    }
}
