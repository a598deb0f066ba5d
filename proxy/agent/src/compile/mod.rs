//! The pure snapshot compiler: a [`Store`] in, an immutable, versioned
//! [`Snapshot`] out. Resources that failed validation (alone or against the rest of
//! the config) are listed in `rejected` and left out; everything else applies.

mod accepted;
pub mod change;
#[cfg(test)]
mod change_tests;
mod cross;
mod destinations;
#[cfg(test)]
mod endpoints_tests;
pub mod gwinputs;

pub use cross::{binds_mesh, host_matches as cross_host_matches, VsDestinations};
pub mod protocol;
mod registry;
pub(crate) mod settings;
mod snapshot;
mod snapshot_change;
mod telemetry;
pub use telemetry::mesh as telemetry_mesh;

pub use accepted::{exported, fqdn, Accepted};
pub use settings::{Settings, Visibility};
pub use snapshot::{Services, Snapshot, RECENT_CHANGES};

use crate::objects::KubeObject;
use crate::store::Store;
use crate::validate::Severity;
use mesh_api::resource::{IstioResource, ResourceKey};
use mesh_api::syncapi::Rejection;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
