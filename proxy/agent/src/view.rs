//! Per-proxy views: the part of a [`Snapshot`] one proxy needs. Outbound, a proxy
//! gets only services exported to its namespace and selected by its Sidecar's
//! egress hosts (or, without a Sidecar, by the agent's [`Visibility`] default);
//! inbound, the PeerAuthentication and AuthorizationPolicies for its own workload.

pub use crate::compile::exported;
use crate::compile::{cross_host_matches, Accepted, Snapshot, Visibility};
use mesh_api::resource::ResourceKey;
use mesh_api::syncapi::{InboundPolicy, ProxyIdentity, ProxyView, Service};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What determines a view besides the snapshot: proxies with equal keys get
/// identical views, so the server computes and encodes each key once per version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewKey {
    pub namespace: String,
    pub sidecar: Option<ResourceKey>,
    pub peer_authentications: Vec<ResourceKey>,
    pub authorization_policies: Vec<ResourceKey>,
    /// A router's labels: they choose its Gateways and gateway Services.
    pub router: Option<BTreeMap<String, String>>,
    /// What its tracing and access log resolve from: the Telemetries that
    /// apply and the pod's `proxy.istio.io/config` tracing (as JSON).
    pub telemetry: Vec<ResourceKey>,
    pub pod_tracing: Option<String>,
}

fn selects(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Sidecar that applies: workload-selected in the proxy's namespace, else the
/// namespace default, else the root namespace default (Istio's precedence).
/// Does a Sidecar resource scope this proxy?
pub fn has_sidecar(snap: &Snapshot, id: &ProxyIdentity) -> bool {
    sidecar_for(snap, id).is_some()
}

fn sidecar_for<'s>(snap: &'s Snapshot, id: &ProxyIdentity) -> Option<&'s Accepted> {
    let in_ns = |a: &&Accepted| a.key.namespace == id.namespace;
    let sel = |a: &Accepted| {
        a.sidecar()
            .workload_selector
            .as_ref()
            .map(|w| &w.labels)
            .filter(|l| !l.is_empty())
            .cloned()
    };
    snap.sidecars
        .iter()
        .filter(in_ns)
        .find(|a| sel(a).is_some_and(|l| selects(&l, &id.labels)))
        .or_else(|| {
            snap.sidecars
                .iter()
                .filter(in_ns)
                .find(|a| sel(a).is_none())
        })
        .or_else(|| {
            snap.sidecars
                .iter()
                .find(|a| a.key.namespace == snap.settings.root_namespace && sel(a).is_none())
        })
}

fn pa_selector(a: &Accepted) -> Option<&BTreeMap<String, String>> {
    a.pa()
        .selector
        .as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty())
}

fn ap_selector(a: &Accepted) -> Option<&BTreeMap<String, String>> {
    a.ap()
        .selector
        .as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty())
}

/// PeerAuthentications that apply, most specific first: workload, namespace, mesh.
fn peer_auths<'s>(snap: &'s Snapshot, id: &ProxyIdentity) -> Vec<&'s Accepted> {
    let root = &snap.settings.root_namespace;
    let pas = &snap.peer_authentications;
    let workload = pas.iter().find(|a| {
        a.key.namespace == id.namespace && pa_selector(a).is_some_and(|l| selects(l, &id.labels))
    });
    let ns = pas
        .iter()
        .find(|a| a.key.namespace == id.namespace && pa_selector(a).is_none());
    let mesh = pas
        .iter()
        .find(|a| &a.key.namespace == root && pa_selector(a).is_none());
    [workload, ns, mesh].into_iter().flatten().collect()
}

fn authz<'s>(snap: &'s Snapshot, id: &ProxyIdentity) -> Vec<&'s Accepted> {
    let root = &snap.settings.root_namespace;
    snap.authorization_policies
        .iter()
        .filter(|a| a.key.namespace == id.namespace || &a.key.namespace == root)
        .filter(|a| ap_selector(a).is_none_or(|l| selects(l, &id.labels)))
        .collect()
}

/// The cache key of a proxy's view.
pub fn key(snap: &Snapshot, id: &ProxyIdentity) -> ViewKey {
    ViewKey {
        namespace: id.namespace.clone(),
        sidecar: sidecar_for(snap, id).map(|a| a.key.clone()),
        peer_authentications: peer_auths(snap, id).iter().map(|a| a.key.clone()).collect(),
        authorization_policies: authz(snap, id).iter().map(|a| a.key.clone()).collect(),
        router: id.router.then(|| id.labels.clone()),
        telemetry: telemetries(snap, id)
            .iter()
            .map(|a| a.key.clone())
            .collect(),
        pod_tracing: pod_tracing(snap, id).and_then(|t| serde_json::to_string(t).ok()),
    }
}

/// Telemetries that apply to the proxy's workload, least specific first.
fn telemetries<'s>(snap: &'s Snapshot, id: &ProxyIdentity) -> Vec<&'s Accepted> {
    let chain = mesh_api::telemetry::resolve::applicable(
        snap.telemetries.iter().map(Accepted::telemetry),
        &snap.settings.root_namespace,
        &id.namespace,
        &id.labels,
    );
    chain
        .into_iter()
        .filter_map(|t| {
            snap.telemetries
                .iter()
                .find(|a| std::ptr::eq(a.telemetry(), t))
        })
        .collect()
}

fn pod_tracing<'s>(
    snap: &'s Snapshot,
    id: &ProxyIdentity,
) -> Option<&'s mesh_api::meshtracing::TracingConfig> {
    snap.pod_tracing
        .get(&(id.namespace.clone(), id.pod.clone()))
}

/// The proxy's tracing and access log: the mesh config's when neither a
/// Telemetry nor its pod annotation says otherwise (so a mesh without them
/// runs exactly what it ran before), else their resolution.
fn telemetry_of(
    snap: &Snapshot,
    id: &ProxyIdentity,
) -> (
    Option<mesh_api::tracing::TracingView>,
    Option<mesh_api::accesslog::AccessLogView>,
) {
    let chain = telemetries(snap, id);
    let pod = pod_tracing(snap, id);
    let legacy = (
        snap.settings.tracing.clone(),
        snap.settings.access_log.clone(),
    );
    if chain.is_empty() && pod.is_none() {
        return legacy;
    }
    let mesh = crate::compile::telemetry_mesh(&snap.settings);
    let specs: Vec<&mesh_api::telemetry::TelemetrySpec> =
        chain.iter().map(|a| &a.telemetry().spec).collect();
    match mesh_api::telemetry::resolve::resolve(&mesh, &specs, pod) {
        Ok(r) => (r.tracing, r.access_log),
        Err(e) => {
            // Providers were checked when the snapshot was compiled; this is
            // a value only the combination gets wrong.
            tracing::warn!(pod = %id.pod, namespace = %id.namespace, error = %e,
                "telemetry does not resolve; the mesh config's settings apply");
            legacy
        }
    }
}

/// Does an egress host (`ns/dnsName`) admit service `svc` for a proxy in `proxy_ns`?
fn egress_admits(entry: &str, svc: &Service, proxy_ns: &str) -> bool {
    let Some((ns, host)) = entry.split_once('/') else {
        return false;
    };
    let ns_ok = match ns {
        "*" => true,
        "." => svc.namespace == proxy_ns,
        "~" => false,
        n => svc.namespace == n,
    };
    ns_ok && cross_host_matches(host, &svc.hostname)
}

/// Builds the view of one proxy.
pub fn build(snap: &Snapshot, id: &ProxyIdentity) -> ProxyView {
    build_with(snap, id, &BTreeSet::new())
}

/// Builds the view of one proxy with the hosts it asked for on demand
/// (the agent's `ondemand` lookups) added to its scope. They still pass `exportTo`, and a
/// Sidecar's egress stays authoritative (Istio's rules: nothing they hide
/// becomes reachable).
pub fn build_with(snap: &Snapshot, id: &ProxyIdentity, requested: &BTreeSet<String>) -> ProxyView {
    if !snap.settings.serves(&id.namespace) {
        // Not a member of the mesh (OpenShift Service Mesh multitenancy):
        // nothing from any namespace.
        return ProxyView {
            version: snap.version,
            outbound_traffic_policy: snap.settings.outbound_policy.clone(),
            ..Default::default()
        };
    }
    if id.router {
        return router(snap, id);
    }
    let ns = id.namespace.as_str();
    let root = snap.settings.root_namespace.as_str();
    let sidecar = sidecar_for(snap, id);
    let (tracing, access_log) = telemetry_of(snap, id);
    let mesh_vs = mesh_virtual_services(snap, ns);
    let egress: Option<Vec<String>> = match sidecar {
        Some(sc) => Some(
            sc.sidecar()
                .egress
                .iter()
                .flat_map(|e| e.hosts.iter().cloned())
                .collect(),
        ),
        None if snap.settings.visibility == Visibility::Mesh => None,
        None => {
            let mut hosts = vec!["./*".to_string(), format!("{root}/*")];
            // Destinations of VirtualServices in its own namespace are reachable too.
            for vs in mesh_vs.iter().filter(|a| a.key.namespace == ns) {
                for d in destinations(vs) {
                    hosts.push(format!(
                        "*/{}",
                        crate::compile::fqdn(&d, &vs.key.namespace, &snap.settings.domain_suffix)
                    ));
                }
            }
            hosts.extend(requested.iter().map(|h| format!("*/{h}")));
            Some(hosts)
        }
    };
    let services: Vec<Arc<Service>> = snap
        .services
        .values()
        .filter(|s| exported(&s.export_to, &s.namespace, ns))
        .filter(|s| {
            let named_export = snap.settings.visibility != Visibility::Mesh
                && sidecar.is_none()
                && s.export_to.iter().any(|e| e == ns);
            named_export
                || egress
                    .as_ref()
                    .is_none_or(|eg| eg.iter().any(|e| egress_admits(e, s, ns)))
        })
        .cloned()
        .collect();
    let virtual_services = virtual_services_for(&mesh_vs, &services);
    ProxyView {
        version: snap.version,
        destination_rules: destination_rules(snap, ns, &services),
        services,
        virtual_services,
        outbound_traffic_policy: sidecar
            .and_then(|s| s.sidecar().outbound_traffic_policy.as_ref()?.mode.clone())
            .unwrap_or_else(|| snap.settings.outbound_policy.clone()),
        inbound: inbound(snap, id),
        gateway: None,
        tracing,
        access_log,
        // With a Sidecar nothing more is visible: no lookups to make.
        on_demand: snap.settings.visibility == Visibility::OnDemand && sidecar.is_none(),
    }
}

/// VirtualServices bound to sidecars and exported to namespace `ns`, after
/// the GAMMA consumer override (GEP-1294, as Istio orders Gateway API
/// routes): a route generated in the proxy's own namespace hides other
/// namespaces' VirtualServices for the same host (consumer > producer).
fn mesh_virtual_services<'s>(snap: &'s Snapshot, ns: &str) -> Vec<&'s Accepted> {
    let mesh_vs: Vec<&Accepted> = snap
        .virtual_services
        .iter()
        .filter(|a| {
            crate::compile::binds_mesh(&a.vs().gateways)
                && exported(&a.export_to, &a.key.namespace, ns)
        })
        .collect();
    let consumer_hosts: BTreeSet<&str> = mesh_vs
        .iter()
        .filter(|a| a.key.namespace == ns && crate::gatewayapi::is_generated(&a.key))
        .flat_map(|a| a.hosts.iter().map(String::as_str))
        .collect();
    mesh_vs
        .into_iter()
        .filter(|a| {
            a.key.namespace == ns || !a.hosts.iter().all(|h| consumer_hosts.contains(h.as_str()))
        })
        .collect()
}

/// The VirtualServices of `mesh_vs` for any of `services`, by `namespace/name`.
fn virtual_services_for(
    mesh_vs: &[&Accepted],
    services: &[Arc<Service>],
) -> BTreeMap<String, mesh_api::networking::VirtualServiceSpec> {
    let hosts: BTreeSet<&str> = services.iter().map(|s| s.hostname.as_str()).collect();
    mesh_vs
        .iter()
        .filter(|a| {
            // An exact host is one set lookup; only wildcards scan.
            a.hosts.iter().any(|h| {
                if h.starts_with('*') {
                    hosts.iter().any(|s| cross_host_matches(h, s))
                } else {
                    hosts.contains(h.as_str())
                }
            })
        })
        .map(|a| {
            (
                format!("{}/{}", a.key.namespace, a.key.name),
                a.vs().clone(),
            )
        })
        .collect()
}

/// `id`'s view with the on-demand hosts `requested`, from `base`, its view
/// without them (shared by its whole scope): the requested services that
/// are exported to it added, routes and rules chosen again for the larger
/// set. The same view [`build_with`] makes, without scanning the registry
/// again; `None` where that is not certain (gateways, a Sidecar, mesh-wide
/// visibility, a non-member namespace, wildcard hosts): build it whole.
pub fn extend(
    snap: &Snapshot,
    id: &ProxyIdentity,
    base: &ProxyView,
    requested: &BTreeSet<String>,
) -> Option<ProxyView> {
    let ns = id.namespace.as_str();
    if id.router
        || !snap.settings.serves(ns)
        || snap.settings.visibility == Visibility::Mesh
        || sidecar_for(snap, id).is_some()
        || requested.iter().any(|h| h.contains('*'))
        || base.version != snap.version
    {
        return None;
    }
    let mut services = base.services.clone();
    for h in requested {
        let Some(s) = snap.services.get(h) else {
            continue;
        };
        if !exported(&s.export_to, &s.namespace, ns) {
            continue;
        }
        // Views list services sorted by hostname.
        if let Err(at) = services.binary_search_by(|x| x.hostname.as_str().cmp(h)) {
            services.insert(at, s.clone());
        }
    }
    if services.len() == base.services.len() {
        return Some(base.clone());
    }
    let mesh_vs = mesh_virtual_services(snap, ns);
    Some(ProxyView {
        virtual_services: virtual_services_for(&mesh_vs, &services),
        destination_rules: destination_rules(snap, ns, &services),
        services,
        ..base.clone()
    })
}

/// A gateway's view: its Gateway servers and bound routes, the services those
/// routes name (every visible one behind an AUTO_PASSTHROUGH server) and their
/// DestinationRules. Mesh routes (`virtual_services`) do not apply to it.
fn router(snap: &Snapshot, id: &ProxyIdentity) -> ProxyView {
    let ns = id.namespace.as_str();
    let gw = crate::gateway::build(snap, id);
    let (tracing, access_log) = telemetry_of(snap, id);
    let services: Vec<Arc<Service>> = snap
        .services
        .values()
        .filter(|s| exported(&s.export_to, &s.namespace, ns))
        .filter(|s| {
            gw.all_services
                || gw
                    .destinations
                    .iter()
                    .any(|d| cross_host_matches(d, &s.hostname))
        })
        .cloned()
        .collect();
    ProxyView {
        version: snap.version,
        destination_rules: destination_rules(snap, ns, &services),
        services,
        virtual_services: BTreeMap::new(),
        outbound_traffic_policy: snap.settings.outbound_policy.clone(),
        inbound: inbound(snap, id),
        gateway: Some(gw.view),
        tracing,
        access_log,
        on_demand: false,
    }
}

/// The DestinationRule of each service, as a proxy of namespace `ns` sees it.
fn destination_rules(
    snap: &Snapshot,
    ns: &str,
    services: &[Arc<Service>],
) -> BTreeMap<String, mesh_api::networking::DestinationRuleSpec> {
    let root = snap.settings.root_namespace.as_str();
    // Rules visible here, exact hosts indexed (a mesh has many rules and a
    // view many services); wildcard hosts are checked against each service.
    let mut exact: HashMap<&str, Vec<(usize, &Accepted)>> = HashMap::new();
    let mut wild: Vec<(usize, &Accepted)> = Vec::new();
    for (i, a) in snap.destination_rules.iter().enumerate() {
        if !exported(&a.export_to, &a.key.namespace, ns) {
            continue;
        }
        match a.hosts.first() {
            Some(h) if h.starts_with('*') => wild.push((i, a)),
            Some(h) => exact.entry(h.as_str()).or_default().push((i, a)),
            None => {}
        }
    }
    let mut destination_rules = BTreeMap::new();
    for s in services {
        let mut candidates: Vec<(usize, &Accepted)> = exact
            .get(s.hostname.as_str())
            .into_iter()
            .flatten()
            .copied()
            .chain(
                wild.iter()
                    .copied()
                    .filter(|(_, a)| cross_host_matches(&a.hosts[0], &s.hostname)),
            )
            .collect();
        // In the snapshot's order, as a scan of all rules would find them.
        candidates.sort_by_key(|(i, _)| *i);
        let candidates = candidates.iter().map(|(_, a)| *a);
        // Istio's lookup order: the proxy's namespace, the service's, then the root.
        let pick = candidates
            .clone()
            .find(|a| a.key.namespace == ns)
            .or_else(|| candidates.clone().find(|a| a.key.namespace == s.namespace))
            .or_else(|| candidates.clone().find(|a| a.key.namespace == root));
        if let Some(dr) = pick {
            destination_rules.insert(s.hostname.clone(), dr.dr().clone());
        }
    }
    destination_rules
}

fn destinations(vs: &Accepted) -> Vec<String> {
    crate::gateway::bind::destinations(vs.vs())
}

fn inbound(snap: &Snapshot, id: &ProxyIdentity) -> InboundPolicy {
    let pas = peer_auths(snap, id);
    // UNSET (or absent) inherits from the next less specific policy.
    let mode = pas
        .iter()
        .filter_map(|a| a.pa().mtls.as_ref()?.mode.clone())
        .find(|m| m != "UNSET")
        .unwrap_or_else(|| "PERMISSIVE".into());
    let port_mtls = pas
        .first()
        .filter(|a| pa_selector(a).is_some())
        .map(|a| {
            a.pa()
                .port_level_mtls
                .iter()
                .filter_map(|(p, m)| {
                    Some((
                        p.parse().ok()?,
                        m.mode
                            .clone()
                            .filter(|m| m != "UNSET")
                            .unwrap_or_else(|| mode.clone()),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    InboundPolicy {
        mtls_mode: mode,
        port_mtls,
        authorization: authz(snap, id)
            .into_iter()
            .map(|a| {
                (
                    format!("{}/{}", a.key.namespace, a.key.name),
                    a.ap().clone(),
                )
            })
            .collect(),
    }
}
