//! An accepted Istio resource with its hosts resolved ([`Accepted`]), and how
//! hosts and `exportTo` are read ([`fqdn`], [`exported`]). Its own file because
//! the snapshot and every compiler step hold or read accepted resources.

use crate::objects::KubeObject;
use mesh_api::networking::{DestinationRuleSpec, GatewaySpec, SidecarSpec, VirtualServiceSpec};
use mesh_api::resource::{IstioResource, ResourceKey};
use mesh_api::security::{AuthorizationPolicySpec, PeerAuthenticationSpec};
use std::sync::Arc;

/// An accepted Istio resource with its hosts resolved to FQDNs.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub key: ResourceKey,
    pub object: Arc<KubeObject>,
    pub hosts: Vec<String>,
    pub export_to: Vec<String>,
}

macro_rules! accessor {
    ($name:ident, $variant:ident, $spec:ty) => {
        pub fn $name(&self) -> &$spec {
            match &*self.object {
                KubeObject::Istio(IstioResource::$variant(r)) => &r.spec,
                _ => unreachable!("Accepted list holds only its own kind"),
            }
        }
    };
}

impl Accepted {
    accessor!(vs, VirtualService, VirtualServiceSpec);
    accessor!(dr, DestinationRule, DestinationRuleSpec);
    accessor!(gateway, Gateway, GatewaySpec);
    accessor!(sidecar, Sidecar, SidecarSpec);
    accessor!(pa, PeerAuthentication, PeerAuthenticationSpec);
    accessor!(ap, AuthorizationPolicy, AuthorizationPolicySpec);

    pub fn telemetry(&self) -> &mesh_api::telemetry::Telemetry {
        match &*self.object {
            KubeObject::Istio(IstioResource::Telemetry(r)) => r,
            _ => unreachable!("Accepted list holds only its own kind"),
        }
    }
}

/// Is a resource with `export_to` in namespace `owner` visible from `ns`?
pub fn exported(export_to: &[String], owner: &str, ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == ns || (e == "." && owner == ns))
}

/// Resolves a host as written in a resource of namespace `ns` to the FQDN the
/// registry uses: short names (no dot) are Kubernetes services of that namespace.
pub fn fqdn(host: &str, ns: &str, domain: &str) -> String {
    if host.contains('.') || host == "*" {
        host.to_string()
    } else {
        format!("{host}.{ns}.svc.{domain}")
    }
}
