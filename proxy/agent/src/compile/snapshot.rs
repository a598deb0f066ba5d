//! The compiled mesh at one version ([`Snapshot`]) and its registry
//! ([`Services`]). Its own file because the compiler's steps read snapshots
//! while the compiler (`compile/mod.rs`) uses those steps to build one.

use super::accepted::{fqdn, Accepted};
use super::destinations::VsDestinations;
use super::gwinputs;
use super::settings::Settings;
use super::snapshot_change::SnapshotChange;
use mesh_api::resource::ResourceKey;
use mesh_api::syncapi::{Rejection, Service};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The registry: services by hostname.
pub type Services = imbl::OrdMap<String, Arc<Service>>;

/// An immutable compiled mesh at one version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: u64,
    pub settings: Arc<Settings>,
    /// Services by hostname.
    pub services: Services,
    pub virtual_services: Arc<Vec<Accepted>>,
    pub destination_rules: Arc<Vec<Accepted>>,
    pub gateways: Arc<Vec<Accepted>>,
    pub sidecars: Arc<Vec<Accepted>>,
    pub peer_authentications: Arc<Vec<Accepted>>,
    pub authorization_policies: Arc<Vec<Accepted>>,
    /// Telemetry resources whose providers all exist, by key.
    pub telemetries: Arc<Vec<Accepted>>,
    /// Resources (or files) not applied, with every error.
    pub rejected: Vec<Rejection>,
    /// Warnings about applied resources.
    pub warnings: Vec<String>,
    /// The service account of every pod the agent knows, by (namespace, name):
    /// whom a subscription for that pod may come from.
    pub pods: Arc<BTreeMap<(String, String), String>>,
    /// The `tracing` of each pod's `proxy.istio.io/config` annotation, by
    /// (namespace, name), for pods that have one.
    pub pod_tracing: Arc<BTreeMap<(String, String), mesh_api::meshtracing::TracingConfig>>,
    /// Credential keys of Secrets, for gateway `credentialName`s.
    pub secrets: Arc<gwinputs::Secrets>,
    /// Services with selectors: which Service ports front a gateway pod.
    pub selector_services: Arc<Vec<gwinputs::SelectorService>>,
    /// The `status` the mesh computes for each Gateway API object it owns, by
    /// that object's key (what the status writer PATCHes).
    pub gateway_api_status: Arc<BTreeMap<ResourceKey, serde_json::Value>>,
    /// What differs from the snapshot published before, when only services
    /// do (set by the pipeline, or by `compile_endpoints`, which knows; `None`
    /// for a standalone compile).
    pub change: Option<Arc<SnapshotChange>>,
    /// The version of the last snapshot that changed more than endpoints
    /// (this one's own unless [`SnapshotChange::endpoints_only`]): a
    /// view built at the same `structure` differs from this version's only
    /// in its services' endpoints. 0 for a standalone compile.
    pub structure: u64,
    /// Every VirtualService destination as an FQDN with the namespace of its
    /// VirtualService, built on first use ([`Snapshot::vs_destinations`]) and
    /// shared by the snapshots of the same structure (the VirtualServices
    /// are the same): each endpoint change asks which namespaces route to
    /// the changed host.
    pub vs_destinations: Arc<std::sync::OnceLock<VsDestinations>>,
    /// The endpoints-only changes since `structure`, oldest first, at most
    /// [`RECENT_CHANGES`] (set by the pipeline): what a stream a few versions
    /// behind must patch, without comparing its whole view
    /// ([`Snapshot::hosts_changed_since`]).
    pub recent_changes: Arc<std::collections::VecDeque<Arc<SnapshotChange>>>,
}

/// How many endpoints-only changes a snapshot remembers.
pub const RECENT_CHANGES: usize = 256;

impl Snapshot {
    /// The hosts whose services may differ between snapshot `version` and
    /// this one, newest change first (a host changed twice is listed twice);
    /// `None` when [`Snapshot::recent_changes`] does not reach back to it.
    /// A list, not a set: a stream that slept through many changes asks for
    /// all of them on every push it gets, and wants only a lookup per host.
    pub fn hosts_changed_since(&self, version: u64) -> Option<Vec<&str>> {
        let mut hosts = Vec::new();
        if version == self.version {
            return Some(hosts);
        }
        for c in self.recent_changes.iter().rev() {
            hosts.extend(c.hosts.keys().map(String::as_str));
            if c.prev_version <= version {
                return (c.prev_version == version).then_some(hosts);
            }
        }
        None
    }

    /// (destination FQDN, VirtualService namespace) for every destination of
    /// every accepted VirtualService.
    pub fn vs_destinations(&self) -> &VsDestinations {
        self.vs_destinations.get_or_init(|| {
            let domain = &self.settings.domain_suffix;
            let mut index = VsDestinations::default();
            for vs in self.virtual_services.iter() {
                let ns = &vs.key.namespace;
                for d in crate::gateway::bind::destinations(vs.vs()) {
                    index.add(fqdn(&d, ns, domain), ns.clone());
                }
            }
            index
        })
    }
}
