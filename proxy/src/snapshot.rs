//! The proxy's compiled view of the mesh: the agent's [`ProxyView`] turned into
//! lookup tables the data path reads without allocation (services by VIP:port and
//! by host name, each service port's protocol and ready endpoints).
//!
//! Snapshots are immutable. The [`Store`] swaps in a new one atomically; a
//! connection or request holds the `Arc` it started with, so in-flight work
//! finishes on the old snapshot and nothing is dropped by an update.
//!
//! Compiling is all or nothing: a view with any resource the proxy cannot use
//! is refused whole ([`CompileError`] names each resource, field and value), so
//! the source NACKs it and the previous snapshot keeps applying. Settings the
//! proxy applies but decides against at run time (TLS files it cannot read, an
//! AuthorizationPolicy field it ignores) are [`Snapshot::warnings`].
//!
//! A snapshot holds config only. What the data path learns at run time
//! (endpoint health, requests in flight, round-robin cursors, connection-pool
//! counts) lives beside it in the runtime table (the `state` module), which each
//! new snapshot joins, so a push does not forget it.
//!
//! The cluster types and their compiling (`cluster`), the errors (`error`)
//! and host-name forms (`hosts`) are files of their own, so this one holds
//! the snapshot's indexes and their lookups.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use mesh_api::syncapi::ProxyView;

use crate::byaddr::ByAddr;
use crate::lb::LbPolicy;

mod cluster;
mod endpoints;
mod error;
mod hosts;

use cluster::{outlier, subset_cluster, tls_warning};
pub use cluster::{Cluster, Protocol};
pub use endpoints::{Endpoint, EndpointRef};
pub use error::{CompileError, ResourceError};
use hosts::{short_names, split_authority};

/// Outbound traffic to destinations that are not in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundPolicy {
    AllowAny,
    RegistryOnly,
}

/// The lookup maps' hasher: every request looks a host or address up, and
/// std's SipHash was most of that lookup's cost. Keys come from the view.
type Fast = foldhash::fast::RandomState;

/// A DestinationRule subset of a host: (port, subset name, its cluster).
type Subset = (u16, String, Arc<Cluster>);

/// The immutable, indexed view one proxy runs on.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    /// The view as received (shared with the sync client's copy).
    pub view: Arc<ProxyView>,
    pub outbound_policy: OutboundPolicy,
    clusters: Vec<Arc<Cluster>>,
    by_vip: HashMap<SocketAddr, usize, Fast>,
    /// Host aliases (FQDN, `name.ns`, `name.ns.svc`, `name` in the proxy's
    /// namespace) → their clusters, every port, in view order. One key per
    /// alias, not per alias and port: a sidecar holds these for every
    /// service it sees (VIPs are in `by_vip`).
    by_host: HashMap<String, Vec<usize>, Fast>,
    /// Endpoint address → cluster, for calls made straight to a pod IP.
    by_endpoint: ByAddr<usize>,
    /// FQDN → (port, cluster) for route destinations. Keyed by host alone so
    /// a request's lookup borrows its `&str` (no key built per request) and a
    /// destination without a port finds the host's ports in one probe.
    by_host_port: HashMap<String, Vec<(u16, usize)>, Fast>,
    /// FQDN → (port, subset name, the subset's cluster) (DestinationRule subsets).
    subsets: HashMap<String, Vec<Subset>, Fast>,
    /// VirtualService routes by host.
    pub routes: crate::route::RouteTable,
    /// A gateway's listeners, servers and routes (`router` mode).
    pub gateway: Option<Arc<crate::gateway::GatewayTable>>,
    /// The workload's AuthorizationPolicies, compiled.
    pub authz: crate::authz::Authz,
    /// Settings applied but decided against (logged and counted once per apply).
    pub warnings: Vec<String>,
}

impl Snapshot {
    /// Compiles a view. `namespace` is the proxy's own namespace (short names
    /// such as `reviews` resolve within it, as cluster DNS does).
    pub fn compile(
        view: impl Into<Arc<ProxyView>>,
        namespace: &str,
    ) -> Result<Snapshot, CompileError> {
        let view = view.into();
        mesh_api::values::sharing_regexes(|| Snapshot::compile_shared(view, namespace))
    }

    fn compile_shared(view: Arc<ProxyView>, namespace: &str) -> Result<Snapshot, CompileError> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut clusters = Vec::new();
        let mut by_vip = HashMap::default();
        let mut by_host: HashMap<String, Vec<usize>, Fast> = HashMap::default();
        let mut by_endpoint = Vec::new();
        let mut by_host_port: HashMap<String, Vec<(u16, usize)>, Fast> = HashMap::default();
        let mut subsets: HashMap<String, Vec<Subset>, Fast> = HashMap::default();
        let no_labels = Arc::new(std::collections::BTreeMap::new());
        for svc in &view.services {
            let short = short_names(svc, namespace);
            let host: Arc<str> = Arc::from(svc.hostname.as_str());
            let service_name: Arc<str> =
                Arc::from(svc.hostname.split('.').next().unwrap_or_default());
            let ns: Arc<str> = Arc::from(svc.namespace.as_str());
            // Each endpoint's labels and identity, once for all its ports.
            let facts: Vec<_> = svc
                .endpoints
                .iter()
                .map(|e| {
                    let labels = if e.labels.is_empty() {
                        no_labels.clone()
                    } else {
                        Arc::new(e.labels.clone())
                    };
                    let sa = e.service_account.as_ref().map(|s| s.as_arc().clone());
                    (labels, sa)
                })
                .collect();
            for port in &svc.ports {
                let idx = clusters.len();
                let cluster_name = format!("outbound|{}||{}", port.port, svc.hostname);
                let rule = view.destination_rules.get(&svc.hostname);
                let ctls = crate::mtls::originate::ClusterTls::compile(
                    crate::mtls::originate::effective_tls(rule, None, port.port).as_ref(),
                    &svc.hostname,
                    &svc.subject_alt_names,
                );
                tls_warning(&ctls, &cluster_name, &mut warnings);
                let endpoints: Arc<[Endpoint]> = svc
                    .endpoints
                    .iter()
                    .zip(&facts)
                    .filter(|(e, _)| e.ready)
                    .filter_map(|(e, (labels, service_account))| {
                        let ip: IpAddr = e.address.parse().ok()?;
                        let target = e
                            .ports
                            .get(&port.name)
                            .copied()
                            .or(port.target_port)
                            .unwrap_or(port.port);
                        Some(Endpoint {
                            addr: SocketAddr::new(ip, target),
                            labels: labels.clone(),
                            service_account: service_account.clone(),
                            tls: ctls.for_endpoint(&e.labels),
                        })
                    })
                    .collect();
                for ep in endpoints.iter() {
                    by_endpoint.push((ep.addr, idx));
                }
                for a in &svc.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        by_vip.insert(SocketAddr::new(ip, port.port), idx);
                    }
                }
                for alias in short.iter().chain(std::iter::once(&svc.hostname)) {
                    by_host.entry(alias.clone()).or_default().push(idx);
                }
                clusters.push(Arc::new(Cluster {
                    name: cluster_name.into(),
                    host: host.clone(),
                    service_name: service_name.clone(),
                    namespace: ns.clone(),
                    port: port.port,
                    protocol: Protocol::from_istio(&port.protocol),
                    endpoints,
                    lb: LbPolicy::from_rule(view.destination_rules.get(&svc.hostname), port.port),
                    limits: crate::limits::Limits::from_rule(
                        view.destination_rules.get(&svc.hostname),
                        port.port,
                    ),
                    outlier: outlier(
                        view.destination_rules.get(&svc.hostname),
                        &svc.hostname,
                        port.port,
                        &mut errors,
                    ),
                    pinned: false,
                }));
                upsert(
                    by_host_port.entry(svc.hostname.clone()).or_default(),
                    |e| e.0 == port.port,
                    (port.port, idx),
                );
                if let Some(dr) = view.destination_rules.get(&svc.hostname) {
                    let base = &clusters[idx];
                    for subset in &dr.subsets {
                        let cluster = Arc::new(subset_cluster(
                            base,
                            dr,
                            subset,
                            &svc.subject_alt_names,
                            &mut errors,
                            &mut warnings,
                        ));
                        upsert(
                            subsets.entry(svc.hostname.clone()).or_default(),
                            |e| e.0 == port.port && e.1 == subset.name,
                            (port.port, subset.name.clone(), cluster),
                        );
                    }
                }
            }
        }
        let outbound_policy = if view
            .outbound_traffic_policy
            .eq_ignore_ascii_case("REGISTRY_ONLY")
        {
            OutboundPolicy::RegistryOnly
        } else {
            OutboundPolicy::AllowAny
        };
        let routes = crate::route::RouteTable::compile(&view.virtual_services, "cluster.local");
        errors.extend(routes.errors.iter().map(|(key, e)| ResourceError {
            resource: format!("VirtualService/{key}"),
            error: e.to_string(),
        }));
        let gateway = view
            .gateway
            .as_ref()
            .map(|g| crate::gateway::GatewayTable::compile(g, "cluster.local"));
        if let Some(g) = &gateway {
            errors.extend(g.errors.iter().map(|(key, e)| ResourceError {
                resource: format!("VirtualService/{key}"),
                error: e.to_string(),
            }));
            warnings.extend(g.warnings.iter().cloned());
        }
        if !errors.is_empty() {
            // Subset clusters repeat their rule's problems.
            errors.sort_by(|a, b| (&a.resource, &a.error).cmp(&(&b.resource, &b.error)));
            errors.dedup();
            return Err(CompileError {
                version: view.version,
                errors,
            });
        }
        let authz = crate::authz::Authz::compile(view.inbound.authorization.iter());
        warnings.extend(authz.warnings.iter().cloned());
        Ok(Snapshot {
            authz,
            version: view.version,
            view,
            outbound_policy,
            clusters,
            by_vip,
            by_host,
            by_endpoint: ByAddr::new(by_endpoint),
            by_host_port,
            subsets,
            routes,
            gateway: gateway.map(Arc::new),
            warnings,
        })
    }

    /// The cluster a route destination names: its host (FQDN), port (or the
    /// service's only port, or `fallback_port`) and optional subset.
    pub fn destination(
        &self,
        host: &str,
        port: Option<u16>,
        subset: Option<&str>,
        fallback_port: u16,
    ) -> Option<Arc<Cluster>> {
        let ports = self
            .by_host_port
            .get(host)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let port = match (port, ports) {
            (Some(p), _) => p,
            // The service's only port.
            (None, [(p, _)]) => *p,
            (None, _) => fallback_port,
        };
        match subset {
            Some(s) => self
                .subsets
                .get(host)?
                .iter()
                .find(|e| e.0 == port && e.1 == s)
                .map(|e| e.2.clone()),
            None => ports
                .iter()
                .find(|e| e.0 == port)
                .map(|e| self.clusters[e.1].clone()),
        }
    }

    /// The cluster a connection to `dst` (its original destination) belongs to:
    /// a service VIP:port, or an endpoint's own address.
    pub fn cluster_for_dst(&self, dst: SocketAddr) -> Option<&Arc<Cluster>> {
        self.by_vip
            .get(&dst)
            .or_else(|| self.by_endpoint.get(dst))
            .map(|i| &self.clusters[*i])
    }

    /// For a call made to an endpoint's own address (not a service VIP): its
    /// service's cluster narrowed to that endpoint, keeping the service's
    /// mTLS, metrics labels and limits, marked [`Cluster::pinned`].
    pub fn pinned_endpoint(&self, dst: SocketAddr) -> Option<Arc<Cluster>> {
        if self.by_vip.contains_key(&dst) {
            return None;
        }
        let base = &self.clusters[*self.by_endpoint.get(dst)?];
        let mut pinned = Cluster::clone(base);
        pinned.endpoints = base
            .endpoints
            .iter()
            .filter(|e| e.addr == dst)
            .cloned()
            .collect();
        pinned.pinned = true;
        Some(Arc::new(pinned))
    }

    /// The cluster for an HTTP `Host`/`:authority`; `port` is the connection's
    /// original destination port, used when the authority has none.
    pub fn cluster_for_authority(&self, authority: &str, port: u16) -> Option<&Arc<Cluster>> {
        let authority = authority.trim_end_matches('.');
        let (host, explicit_port) = split_authority(authority);
        let port = explicit_port.unwrap_or(port);
        if let Ok(ip) = host.parse::<IpAddr>() {
            // A VIP names one service port; a bare VIP takes the connection's.
            return self
                .by_vip
                .get(&SocketAddr::new(ip, port))
                .map(|i| &self.clusters[*i]);
        }
        let candidates = self.by_host.get(host)?;
        // The host's cluster on that port; without an explicit port, else the
        // host's first cluster (a call to `reviews` on a port it lacks).
        candidates
            .iter()
            .find(|i| self.clusters[**i].port == port)
            .or_else(|| {
                explicit_port
                    .is_none()
                    .then(|| candidates.first())
                    .flatten()
            })
            .map(|i| &self.clusters[*i])
    }

    pub fn clusters(&self) -> &[Arc<Cluster>] {
        &self.clusters
    }

    /// Every cluster: the service ports' and their DestinationRule subsets'.
    pub fn all_clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters
            .iter()
            .chain(self.subsets.values().flatten().map(|e| &e.2))
    }
}

/// Replaces the entry of `list` that `same` picks (a later service or rule
/// for the same key wins, as a map insert would), else appends `entry`.
fn upsert<T>(list: &mut Vec<T>, same: impl Fn(&T) -> bool, entry: T) {
    match list.iter_mut().find(|e| same(e)) {
        Some(e) => *e = entry,
        None => list.push(entry),
    }
}

/// Where the current snapshot lives; readers never block.
#[derive(Default)]
pub struct Store {
    current: ArcSwapOption<Snapshot>,
    notify: tokio::sync::Notify,
    /// The last refused view newer than the current snapshot (config dump).
    rejected: std::sync::Mutex<Option<CompileError>>,
}

impl Store {
    pub fn load(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }
    pub fn store(&self, snap: Snapshot) {
        let version = snap.version;
        self.current.store(Some(Arc::new(snap)));
        self.with_rejected(|r| {
            if r.as_ref().is_some_and(|e| e.version <= version) {
                *r = None;
            }
        });
        self.notify.notify_waiters();
    }
    /// Records a refused view; the current snapshot stays.
    pub fn reject(&self, e: CompileError) {
        self.with_rejected(|r| *r = Some(e));
    }
    /// The last refused view, until a view at least as new is applied.
    pub fn rejected(&self) -> Option<CompileError> {
        self.with_rejected(|r| r.clone())
    }
    fn with_rejected<R>(&self, f: impl FnOnce(&mut Option<CompileError>) -> R) -> R {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        f(&mut self.rejected.lock().unwrap_or_else(|e| e.into_inner()))
    }
    /// Whether a first snapshot has been applied (readiness).
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }
    /// Resolves at the next [`Store::store`] (create it, then check, then await).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
    /// Waits until a snapshot is present.
    pub async fn ready(&self) -> Arc<Snapshot> {
        loop {
            let notified = self.notify.notified();
            if let Some(s) = self.load() {
                return s;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests;
