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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use mesh_api::syncapi::{ProxyView, Service as ViewService};

use crate::byaddr::ByAddr;

mod endpoints;
use crate::lb::LbPolicy;
pub use endpoints::{Endpoint, EndpointRef};

/// One resource of a view the proxy cannot use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResourceError {
    /// `VirtualService/namespace/name` or `DestinationRule/<host>`.
    pub resource: String,
    /// The field path and why, e.g. `http[0].match[0].uri: invalid regex ...`.
    pub error: String,
}

impl std::fmt::Display for ResourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.resource, self.error)
    }
}

/// A view the proxy refuses, with every reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("version {version} cannot be applied: {}", join(.errors))]
pub struct CompileError {
    pub version: u64,
    pub errors: Vec<ResourceError>,
}

fn join(errors: &[ResourceError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a port's traffic is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 or gRPC: upstream connections speak h2.
    Http2,
    Tcp,
    /// Unnamed port: sniff the first bytes.
    Unknown,
}

impl Protocol {
    /// Istio's protocol names (from port name prefix or `appProtocol`).
    pub fn from_istio(name: &str) -> Protocol {
        match name.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTP1" | "HTTP/1.1" => Protocol::Http1,
            "HTTP2" | "GRPC" | "GRPC-WEB" | "H2C" => Protocol::Http2,
            "" | "UNKNOWN" | "AUTO" => Protocol::Unknown,
            _ => Protocol::Tcp,
        }
    }
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http1 | Protocol::Http2)
    }
}

/// Outbound traffic to destinations that are not in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundPolicy {
    AllowAny,
    RegistryOnly,
}

/// A service port and everything needed to carry a connection to it.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `outbound|<port>||<host>`, Istio's cluster name (the runtime table's
    /// key, which shares it).
    pub name: Arc<str>,
    pub host: Arc<str>,
    pub service_name: Arc<str>,
    pub namespace: Arc<str>,
    pub port: u16,
    pub protocol: Protocol,
    /// Ready endpoints, in one allocation (see [`EndpointRef`]).
    pub endpoints: Arc<[Endpoint]>,
    pub lb: LbPolicy,
    /// DestinationRule connectionPool limits, if any.
    pub limits: Option<crate::limits::Limits>,
    /// DestinationRule outlierDetection, if any.
    pub outlier: Option<crate::outlier::OutlierConfig>,
    /// One endpoint the app called by its own address: the call goes to that
    /// pod, and the service's routes do not apply (they match service hosts).
    pub pinned: bool,
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

/// The cluster's outlier settings; a bad duration is a [`ResourceError`].
fn outlier(
    rule: Option<&mesh_api::networking::DestinationRuleSpec>,
    host: &str,
    port: u16,
    errors: &mut Vec<ResourceError>,
) -> Option<crate::outlier::OutlierConfig> {
    crate::outlier::OutlierConfig::from_rule(rule, port).unwrap_or_else(|e| {
        errors.push(ResourceError {
            resource: format!("DestinationRule/{host}"),
            error: format!("trafficPolicy.outlierDetection.baseEjectionTime (port {port}): {e}"),
        });
        None
    })
}

/// TLS origination whose files cannot be used: applied (requests to the cluster
/// fail with 503 rather than going out in plaintext) and reported, since the
/// files are the pod's and may be fixed without a config change.
fn tls_warning(
    ctls: &crate::mtls::originate::ClusterTls,
    cluster: &str,
    warnings: &mut Vec<String>,
) {
    if let crate::mtls::originate::ClusterTls::Originate(o) = ctls {
        if let Err(e) = &*o.0 {
            warnings.push(format!(
                "cluster {cluster}: TLS origination settings unusable ({e}); requests to it fail with 503"
            ));
        }
    }
}

fn split_authority(a: &str) -> (&str, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[') {
        // [v6]:port
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, p.parse().ok());
        }
        return (rest.trim_end_matches(']'), None);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (a, None),
    }
}

/// Names a pod in `namespace` can use for a Kubernetes service, as cluster DNS
/// search paths allow: `name`, `name.ns`, `name.ns.svc`.
fn short_names(svc: &ViewService, namespace: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = svc.hostname.split('.').collect();
    if parts.len() >= 3 && parts[2] == "svc" {
        let (name, ns) = (parts[0], parts[1]);
        out.push(format!("{name}.{ns}"));
        out.push(format!("{name}.{ns}.svc"));
        if ns == namespace {
            out.push(name.to_string());
        }
    }
    out
}

/// A subset's cluster: the service port's endpoints whose labels match the
/// subset's, with the subset's traffic policy where it sets one.
fn subset_cluster(
    base: &Cluster,
    dr: &mesh_api::networking::DestinationRuleSpec,
    subset: &mesh_api::networking::Subset,
    service_sans: &[String],
    errors: &mut Vec<ResourceError>,
    warnings: &mut Vec<String>,
) -> Cluster {
    // The subset's own policy replaces the rule's top-level one where present.
    let mut effective = dr.clone();
    if let Some(tp) = &subset.traffic_policy {
        let top = effective
            .traffic_policy
            .get_or_insert_with(Default::default);
        if tp.load_balancer.is_some() {
            top.load_balancer = tp.load_balancer.clone();
        }
        if tp.connection_pool.is_some() {
            top.connection_pool = tp.connection_pool.clone();
        }
        if tp.outlier_detection.is_some() {
            top.outlier_detection = tp.outlier_detection.clone();
        }
        if !tp.port_level_settings.is_empty() {
            top.port_level_settings = tp.port_level_settings.clone();
        }
        if tp.tls.is_some() {
            top.tls = tp.tls.clone();
        }
    }
    let name = format!("outbound|{}|{}|{}", base.port, subset.name, base.host);
    let ctls = crate::mtls::originate::ClusterTls::compile(
        crate::mtls::originate::effective_tls(Some(dr), Some(subset), base.port).as_ref(),
        &base.host,
        service_sans,
    );
    tls_warning(&ctls, &name, warnings);
    let endpoints = base
        .endpoints
        .iter()
        .filter(|e| {
            subset
                .labels
                .iter()
                .all(|(k, v)| e.labels.get(k) == Some(v))
        })
        .map(|e| Endpoint {
            addr: e.addr,
            labels: e.labels.clone(),
            service_account: e.service_account.clone(),
            tls: ctls.for_endpoint(&e.labels),
        })
        .collect();
    Cluster {
        name: name.into(),
        host: base.host.clone(),
        service_name: base.service_name.clone(),
        namespace: base.namespace.clone(),
        port: base.port,
        protocol: base.protocol,
        endpoints,
        lb: LbPolicy::from_rule(Some(&effective), base.port),
        limits: crate::limits::Limits::from_rule(Some(&effective), base.port),
        outlier: outlier(Some(&effective), &base.host, base.port, errors),
        pinned: false,
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
mod tests {
    use super::*;

    use mesh_api::syncapi::{Endpoint as VEp, ServicePort};

    fn view() -> ProxyView {
        ProxyView {
            version: 7,
            services: vec![ViewService {
                hostname: "reviews.default.svc.cluster.local".into(),
                namespace: "default".into(),
                addresses: vec!["10.96.0.10".into()],
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 9080,
                    target_port: Some(9080),
                    protocol: "HTTP".into(),
                }],
                endpoints: vec![
                    VEp {
                        address: "10.88.0.5".into(),
                        ready: true,
                        ..Default::default()
                    },
                    VEp {
                        address: "10.88.0.6".into(),
                        ready: false,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }
            .into()],
            outbound_traffic_policy: "REGISTRY_ONLY".into(),
            ..Default::default()
        }
    }

    #[test]
    fn host_lookups_and_shared_endpoint_facts() {
        let mut v = view();
        let svc = std::sync::Arc::make_mut(&mut v.services[0]);
        svc.ports.push(ServicePort {
            name: "grpc".into(),
            port: 9090,
            target_port: None,
            protocol: "GRPC".into(),
        });
        svc.endpoints[0].labels = [("app".to_string(), "reviews".to_string())].into();
        svc.endpoints[0].service_account = Some("bookinfo-reviews".into());
        let fqdn = "reviews.default.svc.cluster.local";
        v.destination_rules.insert(
            fqdn.into(),
            serde_yaml_ng::from_str(
                "host: reviews\nsubsets: [{name: v1, labels: {app: reviews}}]\n",
            )
            .unwrap(),
        );
        let snap = Snapshot::compile(v, "default").unwrap();
        // Route destinations: by port, the only port, the fallback, a subset.
        let dest = |port, subset, fallback| {
            snap.destination(fqdn, port, subset, fallback)
                .map(|c| c.name.clone())
        };
        assert_eq!(
            dest(Some(9090), None, 1).as_deref(),
            Some("outbound|9090||reviews.default.svc.cluster.local")
        );
        assert_eq!(
            dest(None, None, 9080).as_deref(),
            Some("outbound|9080||reviews.default.svc.cluster.local")
        );
        assert_eq!(
            dest(None, None, 80),
            None,
            "two ports and no fallback among them"
        );
        assert_eq!(
            dest(Some(9080), Some("v1"), 1).as_deref(),
            Some("outbound|9080|v1|reviews.default.svc.cluster.local")
        );
        assert_eq!(dest(Some(9080), Some("v2"), 1), None);
        assert_eq!(
            snap.destination("ratings.default.svc.cluster.local", None, None, 9080)
                .map(|c| c.port),
            None
        );
        assert_eq!(
            snap.all_clusters().count(),
            4,
            "two ports, each with subset v1"
        );
        let port = |a: &str, p: u16| snap.cluster_for_authority(a, p).map(|c| c.port);
        // A name and its aliases, by the connection's port or an explicit one.
        assert_eq!(port("reviews", 9090), Some(9090));
        assert_eq!(port("reviews.default.svc.cluster.local.", 9080), Some(9080));
        assert_eq!(port("reviews.default:9090", 80), Some(9090));
        // No explicit port and none of the service's: its first port.
        assert_eq!(port("reviews.default.svc", 80), Some(9080));
        assert_eq!(port("reviews:80", 9080), None);
        // A VIP names one service port; an endpoint address or a stranger none.
        assert_eq!(port("10.96.0.10", 9090), Some(9090));
        assert_eq!(port("10.96.0.10:80", 9090), None);
        assert_eq!(port("10.88.0.5", 9080), None);
        assert_eq!(port("ratings", 9080), None);
        // One endpoint, two ports: its labels and identity are held once.
        let eps: Vec<_> = snap
            .clusters()
            .iter()
            .map(|c| c.endpoints[0].clone())
            .collect();
        assert_eq!(eps.len(), 2);
        assert!(std::sync::Arc::ptr_eq(&eps[0].labels, &eps[1].labels));
        assert_eq!(
            eps[1].labels.get("app").map(String::as_str),
            Some("reviews")
        );
        assert_eq!(eps[1].service_account.as_deref(), Some("bookinfo-reviews"));
        assert_ne!(eps[0].addr, eps[1].addr);
    }

    #[test]
    fn a_view_with_an_unusable_resource_is_refused_whole_with_every_reason() {
        let mut v = view();
        let host = "reviews.default.svc.cluster.local";
        v.destination_rules.insert(
            host.into(),
            serde_yaml_ng::from_str(
                "host: reviews\ntrafficPolicy: {outlierDetection: {baseEjectionTime: 3x}}\nsubsets: [{name: v1, labels: {version: v1}}]\n",
            )
            .unwrap(),
        );
        v.virtual_services.insert(
            "default/reviews".into(),
            serde_yaml_ng::from_str(
                "hosts: [reviews]\nhttp:\n- timeout: 10\n  route: [{destination: {host: reviews}}]\n",
            )
            .unwrap(),
        );
        let e = Snapshot::compile(v, "default").unwrap_err();
        assert_eq!(e.version, 7);
        // The subset cluster repeats its rule's problem: reported once.
        assert_eq!(
            e.to_string(),
            "version 7 cannot be applied: \
             DestinationRule/reviews.default.svc.cluster.local: trafficPolicy.outlierDetection.baseEjectionTime (port 9080): unknown unit \"x\" in duration \"3x\"; \
             VirtualService/default/reviews: http[0].timeout: missing unit in duration \"10\""
        );
    }

    #[test]
    fn lookups() {
        let s = Snapshot::compile(view(), "default").unwrap();
        assert_eq!(s.outbound_policy, OutboundPolicy::RegistryOnly);
        let c = s
            .cluster_for_dst("10.96.0.10:9080".parse().unwrap())
            .unwrap();
        assert_eq!(&*c.name, "outbound|9080||reviews.default.svc.cluster.local");
        assert_eq!(c.endpoints.len(), 1, "only ready endpoints");
        assert!(s
            .cluster_for_dst("10.88.0.5:9080".parse().unwrap())
            .is_some());
        // A pod's own address: that endpoint alone, routes off; a VIP is not pinned.
        let p = s
            .pinned_endpoint("10.88.0.5:9080".parse().unwrap())
            .unwrap();
        assert!(p.pinned);
        assert_eq!(p.name, c.name);
        let addrs: Vec<_> = p.endpoints.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(addrs, ["10.88.0.5:9080"]);
        assert!(s
            .pinned_endpoint("10.96.0.10:9080".parse().unwrap())
            .is_none());
        assert!(!c.pinned);
        for a in [
            "reviews",
            "reviews:9080",
            "reviews.default",
            "reviews.default.svc.cluster.local:9080",
            "10.96.0.10:9080",
        ] {
            assert!(s.cluster_for_authority(a, 9080).is_some(), "{a}");
        }
        assert!(s.cluster_for_authority("reviews:9999", 9080).is_none());
        assert!(s.cluster_for_authority("ratings", 9080).is_none());
        // Short name only from the same namespace.
        let other = Snapshot::compile(view(), "shop").unwrap();
        assert!(other.cluster_for_authority("reviews", 9080).is_none());
        assert!(other
            .cluster_for_authority("reviews.default", 9080)
            .is_some());
    }

    #[test]
    fn protocols() {
        assert_eq!(Protocol::from_istio("GRPC"), Protocol::Http2);
        assert_eq!(Protocol::from_istio("http"), Protocol::Http1);
        assert_eq!(Protocol::from_istio("MONGO"), Protocol::Tcp);
        assert_eq!(Protocol::from_istio("UNKNOWN"), Protocol::Unknown);
    }
}
