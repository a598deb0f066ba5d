//! The pure snapshot compiler: a [`Store`] in, an immutable, versioned
//! [`Snapshot`] out. Resources that failed validation (alone or against the rest of
//! the config) are listed in `rejected` and left out; everything else applies.

pub mod change;
mod cross;
#[cfg(test)]
mod endpoints_tests;
pub mod gwinputs;

pub use cross::{binds_mesh, host_matches as cross_host_matches, VsDestinations};
pub mod protocol;
mod registry;
mod telemetry;
pub use telemetry::mesh as telemetry_mesh;

use crate::objects::KubeObject;
use crate::store::Store;
use crate::validate::Severity;
use mesh_api::networking::{DestinationRuleSpec, GatewaySpec, SidecarSpec, VirtualServiceSpec};
use mesh_api::resource::{IstioResource, ResourceKey};
use mesh_api::security::{AuthorizationPolicySpec, PeerAuthenticationSpec};
use mesh_api::syncapi::{Rejection, Service};
use std::collections::{BTreeMap, BTreeSet};
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
    pub change: Option<Arc<change::SnapshotChange>>,
    /// The version of the last snapshot that changed more than endpoints
    /// (this one's own unless [`change::SnapshotChange::endpoints_only`]): a
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
    pub recent_changes: Arc<std::collections::VecDeque<Arc<change::SnapshotChange>>>,
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

/// Compiles the store into a snapshot. Pure: same store, settings and version,
/// same snapshot.
pub fn compile(store: &Store, settings: &Arc<Settings>, version: u64) -> Snapshot {
    compile_cached(store, settings, version, &mut CompileCache::default())
}

/// Memo of compiled services keyed by the exact objects (by identity) they were
/// built from, so a one-endpoint change rebuilds one service, not the registry.
/// Keep one per settings value; the result equals [`compile`]'s.
pub use registry::RegistryCache as CompileCache;

/// [`compile`] reusing services whose inputs did not change since the last call.
pub fn compile_cached(
    store: &Store,
    settings: &Arc<Settings>,
    version: u64,
    cache: &mut CompileCache,
) -> Snapshot {
    // Multitenant: what lives outside the member namespaces does not exist
    // for the mesh (cluster-scoped objects, such as Namespaces, stay).
    let scoped;
    let store = match &settings.members {
        Some(m) => {
            scoped = store.restricted(|ns| ns.is_empty() || m.contains(ns));
            &scoped
        }
        None => store,
    };
    let mut snap = Snapshot {
        version,
        settings: settings.clone(),
        ..Default::default()
    };
    for (origin, errs) in &store.origin_errors {
        snap.rejected.push(Rejection {
            resource: origin.clone(),
            errors: errs.clone(),
        });
    }
    let mut accepted: BTreeMap<&'static str, Vec<Accepted>> = BTreeMap::new();
    // Gateway API objects become Istio objects first; those join the same
    // accepted/rejected flow after the stored ones (so on a host conflict
    // between a user mesh VirtualService and a generated one in the same
    // namespace, the user's wins and the generated one is rejected, naming
    // its source route).
    let translated = crate::gatewayapi::translate(store, settings);
    let mut generated: Vec<(ResourceKey, Arc<KubeObject>, Vec<crate::validate::Finding>)> =
        Vec::new();
    for (key, r) in translated.objects {
        if store.objects.contains_key(&key) {
            snap.warnings.push(format!(
                "warning: {key}: a stored object has the name of a generated one; the generated one is dropped"
            ));
            continue;
        }
        let findings = crate::validate::validate(&r);
        generated.push((key, Arc::new(KubeObject::Istio(r)), findings));
    }
    snap.warnings.extend(translated.warnings);
    snap.gateway_api_status = Arc::new(translated.statuses);
    let stored = store
        .objects
        .iter()
        .map(|(k, e)| (k, e.object.clone(), e.findings.as_slice()));
    let generated_iter = generated
        .iter()
        .map(|(k, o, f)| (k, o.clone(), f.as_slice()));
    for (key, object, findings) in stored.chain(generated_iter) {
        // Findings come with Istio and Gateway API objects (core objects have
        // none); both report rejections here. Only Istio objects are accepted
        // below: Gateway API objects reach the accepted lists via translation.
        let from = match &*object {
            KubeObject::Istio(r) => r
                .meta()
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::gatewayapi::PARENT_ANNOTATION))
                .map(|p| format!(" (generated from {p})")),
            _ => None,
        }
        .unwrap_or_default();
        let errors: Vec<String> = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| format!("{f}{from}"))
            .collect();
        snap.warnings.extend(
            findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
                .map(ToString::to_string),
        );
        if !errors.is_empty() {
            snap.rejected.push(Rejection {
                resource: key.to_string(),
                errors,
            });
            continue;
        }
        let KubeObject::Istio(r) = &*object else {
            continue;
        };
        let ns = &key.namespace;
        let d = &settings.domain_suffix;
        let (hosts, export_to) = match r {
            IstioResource::VirtualService(v) => (
                v.spec.hosts.iter().map(|h| fqdn(h, ns, d)).collect(),
                v.spec.export_to.clone(),
            ),
            IstioResource::DestinationRule(v) => {
                (vec![fqdn(&v.spec.host, ns, d)], v.spec.export_to.clone())
            }
            _ => (Vec::new(), Vec::new()),
        };
        accepted.entry(r.kind()).or_default().push(Accepted {
            key: key.clone(),
            object: object.clone(),
            hosts,
            export_to,
        });
    }
    let mut take = |k: &str| accepted.remove(k).unwrap_or_default();
    let service_entries = take("ServiceEntry");
    snap.destination_rules = take("DestinationRule").into();
    snap.gateways = take("Gateway").into();
    snap.sidecars = take("Sidecar").into();
    snap.peer_authentications = take("PeerAuthentication").into();
    snap.authorization_policies = take("AuthorizationPolicy").into();
    snap.telemetries = telemetry::check(take("Telemetry"), settings, &mut snap.rejected).into();
    let virtual_services = take("VirtualService");
    let ses: Vec<&mesh_api::networking::ServiceEntry> = service_entries
        .iter()
        .filter_map(|a| match &*a.object {
            KubeObject::Istio(IstioResource::ServiceEntry(se)) => Some(&**se),
            _ => None,
        })
        .collect();
    snap.services = registry::build(store, settings, &mut snap.warnings, &ses, cache);
    let (vs, rejected, warnings) = cross::check_virtual_services(virtual_services, &snap);
    snap.virtual_services = vs.into();
    snap.rejected.extend(rejected);
    snap.warnings.extend(warnings);
    snap.rejected.sort_by(|a, b| a.resource.cmp(&b.resource));
    snap.pods = Arc::new(pod_accounts(store));
    snap.pod_tracing = Arc::new(telemetry::pod_tracing(store, &mut snap.warnings));
    snap.secrets = Arc::new(gwinputs::secrets(store));
    snap.selector_services = Arc::new(gwinputs::selector_services(store));
    snap
}

/// The snapshot after `prev` when only EndpointSlices changed (`changes`,
/// from [`Store::take_changes`]): `prev` with the services those slices
/// belong to (before and after the change) built again, the rest shared.
/// Equals [`compile_cached`]'s result, with [`Snapshot::change`] already
/// set from the rebuilt hosts; `None` when it cannot stand for it
/// (mesh members restrict the store, a service appears or disappears).
pub fn compile_endpoints(
    prev: &Snapshot,
    store: &Store,
    changes: &crate::store::Changes,
    version: u64,
    cache: &mut CompileCache,
) -> Option<Snapshot> {
    if prev.version == 0 || prev.settings.members.is_some() || !changes.endpoint_slices_only() {
        return None;
    }
    let mut affected = BTreeSet::new();
    for (key, before) in &changes.objects {
        let now = store.objects.get(key).map(|e| &e.object);
        for o in [before.as_ref(), now].into_iter().flatten() {
            let KubeObject::EndpointSlice(s) = &**o else {
                return None;
            };
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(mesh_api::networking::SERVICE_NAME_LABEL))
            {
                affected.insert((key.namespace.clone(), svc.clone()));
            }
        }
    }
    let (services, hosts) =
        registry::rebuild(store, &prev.settings, &prev.services, &affected, cache)?;
    // Field by field (no `..prev.clone()`, which would copy the service map
    // once more only to drop it); a new field must be placed here.
    let mut next = Snapshot {
        version,
        settings: prev.settings.clone(),
        services,
        virtual_services: prev.virtual_services.clone(),
        destination_rules: prev.destination_rules.clone(),
        gateways: prev.gateways.clone(),
        sidecars: prev.sidecars.clone(),
        peer_authentications: prev.peer_authentications.clone(),
        authorization_policies: prev.authorization_policies.clone(),
        telemetries: prev.telemetries.clone(),
        rejected: prev.rejected.clone(),
        warnings: prev.warnings.clone(),
        pods: prev.pods.clone(),
        pod_tracing: prev.pod_tracing.clone(),
        secrets: prev.secrets.clone(),
        selector_services: prev.selector_services.clone(),
        gateway_api_status: prev.gateway_api_status.clone(),
        change: None,
        structure: prev.structure,
        vs_destinations: prev.vs_destinations.clone(),
        recent_changes: Arc::default(),
    };
    // What changed is known: the rebuilt hosts (no walk over the registry).
    next.change =
        change::SnapshotChange::among(prev, &next, hosts.iter().map(String::as_str)).map(Arc::new);
    Some(next)
}

/// (namespace, pod) → serviceAccountName, `default` when the Pod names none
/// (the service account admission controller's default).
fn pod_accounts(store: &Store) -> BTreeMap<(String, String), String> {
    store
        .of_kind("Pod")
        .filter_map(|e| match &*e.object {
            KubeObject::Pod(p) => {
                let ns = p
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let sa = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .filter(|sa| !sa.is_empty())
                    .unwrap_or_else(|| "default".into());
                Some(((ns, p.metadata.name.clone()?), sa))
            }
            _ => None,
        })
        .collect()
}
