//! The service registry: Kubernetes Services with endpoints from EndpointSlices
//! (or, without slices, from matching Pods as the EndpointSlice controller would),
//! and ServiceEntry hosts.

use super::protocol;
use super::settings::Settings;
use super::snapshot::Services;
use crate::objects::KubeObject;
use crate::store::Store;
use k8s_openapi::api::core::v1::{Pod, Service as KService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_api::networking::{self as net, ServiceEntry};
use mesh_api::resource::ResourceKey;
use mesh_api::syncapi::{Endpoint, Service, ServicePort};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Per-namespace indexes used while building services.
#[derive(Default)]
struct Index<'a> {
    pods: HashMap<&'a str, Vec<&'a Pod>>,
    pods_by_name: HashMap<(&'a str, &'a str), &'a Pod>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    /// The stored object behind each typed reference (for the memo's identity check).
    arcs: HashMap<*const (), &'a Arc<KubeObject>>,
}

/// Compiled Kubernetes services with the objects they came from. Holding the
/// `Arc`s keeps their addresses from being reused, so pointer equality is exact.
#[derive(Default)]
pub struct RegistryCache {
    entries: HashMap<String, (Vec<Arc<KubeObject>>, Arc<Service>)>,
}

fn index(store: &Store) -> Index<'_> {
    let mut ix = Index::default();
    for e in store.of_kind("Pod") {
        ix.add_pod(e);
    }
    for e in store.of_kind("EndpointSlice") {
        ix.add_slice(e, |_| true);
    }
    ix
}

impl<'a> Index<'a> {
    fn add_pod(&mut self, e: &'a crate::store::Entry) {
        if let KubeObject::Pod(p) = &*e.object {
            let ns = p.metadata.namespace.as_deref().unwrap_or("default");
            self.pods.entry(ns).or_default().push(p);
            self.pods_by_name
                .insert((ns, p.metadata.name.as_deref().unwrap_or("")), p);
            self.arcs.insert(&**p as *const Pod as *const (), &e.object);
        }
    }

    /// Adds a slice labelled with a service name that `keep` accepts.
    fn add_slice(&mut self, e: &'a crate::store::Entry, keep: impl Fn(&str) -> bool) {
        if let KubeObject::EndpointSlice(s) = &*e.object {
            let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(net::SERVICE_NAME_LABEL))
                .filter(|l| keep(l))
            else {
                return;
            };
            self.arcs
                .insert(&**s as *const EndpointSlice as *const (), &e.object);
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            self.slices.entry((ns, svc.as_str())).or_default().push(s);
        }
    }
}

/// Builds every service, keyed by hostname. Kubernetes Services win over a
/// ServiceEntry declaring the same host (the collision is reported in `warnings`).
pub fn build(
    store: &Store,
    settings: &Settings,
    warnings: &mut Vec<String>,
    accepted_se: &[&ServiceEntry],
    cache: &mut RegistryCache,
) -> Services {
    let ix = index(store);
    let mut out = BTreeMap::new();
    let mut next = HashMap::with_capacity(cache.entries.len());
    for e in store.of_kind("Service") {
        if let KubeObject::Service(s) = &*e.object {
            let inputs = inputs(&e.object, s, &ix);
            let key = format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or("default"),
                s.metadata.name.as_deref().unwrap_or("")
            );
            let reused = cache.entries.remove(&key).filter(|(old, _)| {
                old.len() == inputs.len() && old.iter().zip(&inputs).all(|(a, b)| Arc::ptr_eq(a, b))
            });
            let svc = match reused {
                Some((_, svc)) => Some(svc),
                None => kube_service(s, &ix, settings).map(Arc::new),
            };
            if let Some(svc) = svc {
                out.insert(svc.hostname.clone(), svc.clone());
                next.insert(key, (inputs, svc));
            }
        }
    }
    cache.entries = next;
    for se in accepted_se {
        for svc in service_entry(se, &ix, &settings.trust_domain) {
            if out.contains_key(&svc.hostname) {
                warnings.push(format!(
                    "ServiceEntry/{}/{}: host {} is already a Kubernetes Service; the Service wins",
                    svc.namespace,
                    se.metadata.name.as_deref().unwrap_or(""),
                    svc.hostname
                ));
                continue;
            }
            out.insert(svc.hostname.clone(), Arc::new(svc));
        }
    }
    out.into_iter().collect()
}

/// [`build`] after a change to EndpointSlices alone: `prev` (the registry
/// built before) with the Kubernetes services named in `affected`
/// (namespace, name) built again from their namespace's slices and pods,
/// without indexing the whole store. `None` when that cannot stand for a
/// full build (a service that appears, disappears or changes hostname).
pub fn rebuild(
    store: &Store,
    settings: &Settings,
    prev: &Services,
    affected: &BTreeSet<(String, String)>,
    cache: &mut RegistryCache,
) -> Option<(Services, Vec<String>)> {
    let mut out = prev.clone();
    let mut hosts = Vec::new();
    for (ns, name) in affected {
        let key = ResourceKey {
            kind: "Service".into(),
            namespace: ns.clone(),
            name: name.clone(),
        };
        let Some(entry) = store.objects.get(&key) else {
            continue; // slices of no Service: nothing to build
        };
        let KubeObject::Service(s) = &*entry.object else {
            return None;
        };
        let ix = index_namespace(store, ns, name);
        let inputs = inputs(&entry.object, s, &ix);
        let svc = Arc::new(kube_service(s, &ix, settings)?);
        let cache_key = format!("{ns}/{name}");
        let known = cache.entries.get(&cache_key)?;
        if known.1.hostname != svc.hostname || !out.contains_key(&svc.hostname) {
            return None;
        }
        out.insert(svc.hostname.clone(), svc.clone());
        hosts.push(svc.hostname.clone());
        cache.entries.insert(cache_key, (inputs, svc));
    }
    Some((out, hosts))
}

/// [`index`] of what one service's endpoints come from: the pods of its
/// namespace and the slices labelled with its name.
fn index_namespace<'a>(store: &'a Store, ns: &'a str, service: &str) -> Index<'a> {
    let mut ix = Index::default();
    for e in store.of_kind_in("Pod", ns) {
        ix.add_pod(e);
    }
    for e in store.of_kind_in("EndpointSlice", ns) {
        ix.add_slice(e, |s| s == service);
    }
    ix
}

/// Every stored object a Kubernetes service's compiled form depends on.
fn inputs(me: &Arc<KubeObject>, s: &KService, ix: &Index<'_>) -> Vec<Arc<KubeObject>> {
    let ns = s.metadata.namespace.as_deref().unwrap_or("default");
    let name = s.metadata.name.as_deref().unwrap_or("");
    let arc = |p: *const ()| ix.arcs.get(&p).map(|a| (*a).clone());
    let mut out = vec![me.clone()];
    match ix.slices.get(&(ns, name)) {
        Some(slices) => {
            for sl in slices {
                out.extend(arc(&**sl as *const EndpointSlice as *const ()));
                for ep in sl.endpoints.iter().flatten() {
                    let pod = ep
                        .target_ref
                        .as_ref()
                        .and_then(|r| ix.pods_by_name.get(&(ns, r.name.as_deref().unwrap_or(""))));
                    out.extend(pod.and_then(|p| arc(*p as *const Pod as *const ())));
                }
            }
        }
        None => {
            let sel = s
                .spec
                .as_ref()
                .and_then(|x| x.selector.as_ref())
                .filter(|x| !x.is_empty());
            if let Some(sel) = sel {
                for p in ix.pods.get(ns).into_iter().flatten() {
                    if matches(sel, p.metadata.labels.as_ref()) {
                        out.extend(arc(*p as *const Pod as *const ()));
                    }
                }
            }
        }
    }
    out
}

fn kube_service(s: &KService, ix: &Index<'_>, settings: &Settings) -> Option<Service> {
    let ns = s.metadata.namespace.as_deref().unwrap_or("default");
    let name = s.metadata.name.as_deref()?;
    let spec = s.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| ServicePort {
            name: p.name.clone().unwrap_or_default(),
            port: u16::try_from(p.port).unwrap_or(0),
            target_port: match &p.target_port {
                Some(IntOrString::Int(i)) => u16::try_from(*i).ok(),
                _ => None,
            },
            protocol: protocol::for_service_port(
                p.name.as_deref(),
                p.protocol.as_deref(),
                p.app_protocol.as_deref(),
            )
            .into(),
        })
        .collect();
    let mut addresses: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if addresses.is_empty() {
        addresses.extend(spec.cluster_ip.clone());
    }
    addresses.retain(|a| a != "None" && !a.is_empty());
    let endpoints = match ix.slices.get(&(ns, name)) {
        Some(slices) => from_slices(ns, slices, ix),
        None => from_pods(s, ns, ix),
    };
    let export_to = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(net::EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Some(Service {
        subject_alt_names: subject_alt_names(&settings.trust_domain, ns, &endpoints, &[]),
        hostname: format!("{name}.{ns}.svc.{}", settings.domain_suffix),
        namespace: ns.into(),
        origin: "Kubernetes".into(),
        addresses,
        ports,
        endpoints,
        export_to,
        location: None,
        resolution: None,
    })
}

/// The identities a service's workloads present, as Istio derives a cluster's
/// SAN list: `spiffe://<td>/ns/<ns>/sa/<sa>` for each endpoint's service account
/// (endpoints without one add nothing), plus names a ServiceEntry declares.
pub fn subject_alt_names(
    trust_domain: &str,
    ns: &str,
    endpoints: &[Endpoint],
    declared: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = endpoints
        .iter()
        .filter_map(|e| e.service_account.as_deref().filter(|sa| !sa.is_empty()))
        .filter_map(|sa| mesh_api::Identity::new(trust_domain, ns, sa).ok())
        .map(|id| id.to_string())
        .chain(declared.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn locality(labels: Option<&BTreeMap<String, String>>, zone: Option<&str>) -> String {
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if let Some(l) = get(net::LOCALITY_LABEL) {
        return l.replace('.', "/");
    }
    let parts = [
        get(net::REGION_LABEL),
        zone.or(get(net::ZONE_LABEL)),
        get(net::SUBZONE_LABEL),
    ];
    if parts.iter().all(Option::is_none) {
        return String::new();
    }
    parts.map(|p| p.unwrap_or("")).join("/")
}

fn from_slices(ns: &str, slices: &[&EndpointSlice], ix: &Index<'_>) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for s in slices {
        let ports: mesh_api::portmap::PortMap = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        for ep in s.endpoints.iter().flatten() {
            let pod = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| ix.pods_by_name.get(&(ns, r.name.as_deref().unwrap_or(""))));
            let labels = pod.and_then(|p| p.metadata.labels.as_ref());
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for addr in &ep.addresses {
                out.push(Endpoint {
                    address: addr.clone(),
                    ports: ports.clone(),
                    labels: labels.cloned().unwrap_or_default(),
                    locality: locality(labels, ep.zone.as_deref()).into(),
                    ready,
                    service_account: pod
                        .and_then(|p| p.spec.as_ref()?.service_account_name.as_deref())
                        .map(Into::into),
                });
            }
        }
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

fn pod_ready(p: &Pod) -> bool {
    let st = p.status.as_ref();
    st.and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn matches(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Endpoints the EndpointSlice controller would create: pods with an IP matching
/// the selector (not terminating), ready according to their Ready condition.
fn from_pods(s: &KService, ns: &str, ix: &Index<'_>) -> Vec<Endpoint> {
    let Some(spec) = s.spec.as_ref() else {
        return Vec::new();
    };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in ix.pods.get(ns).into_iter().flatten() {
        let labels = p.metadata.labels.as_ref();
        if !matches(selector, labels) || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                let target = match &sp.target_port {
                    Some(IntOrString::Int(i)) => u16::try_from(*i).ok(),
                    Some(IntOrString::String(n)) => p
                        .spec
                        .as_ref()?
                        .containers
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten())
                        .find(|cp| cp.name.as_deref() == Some(n.as_str()))
                        .and_then(|cp| u16::try_from(cp.container_port).ok()),
                    None => u16::try_from(sp.port).ok(),
                }?;
                Some((sp.name.clone().unwrap_or_default(), target))
            })
            .collect();
        out.push(Endpoint {
            address: ip,
            ports,
            labels: labels.cloned().unwrap_or_default(),
            locality: locality(labels, None).into(),
            ready: pod_ready(p),
            service_account: p
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.as_deref())
                .map(Into::into),
        });
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

fn service_entry(se: &ServiceEntry, ix: &Index<'_>, trust_domain: &str) -> Vec<Service> {
    let ns = se.metadata.namespace.as_deref().unwrap_or("default");
    let s = &se.spec;
    let ports: Vec<ServicePort> = s
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone().unwrap_or_default(),
            port: u16::try_from(p.number).unwrap_or(0),
            target_port: p.target_port.and_then(|t| u16::try_from(t).ok()),
            protocol: p
                .protocol
                .as_deref()
                .and_then(protocol::parse)
                .unwrap_or("UNKNOWN")
                .into(),
        })
        .collect();
    let default_ports = |over: &BTreeMap<String, u32>| -> mesh_api::portmap::PortMap {
        ports
            .iter()
            .map(|p| {
                let n = over
                    .get(&p.name)
                    .and_then(|n| u16::try_from(*n).ok())
                    .or(p.target_port)
                    .unwrap_or(p.port);
                (p.name.clone(), n)
            })
            .collect()
    };
    let mut endpoints: Vec<Endpoint> = s
        .endpoints
        .iter()
        .map(|we| Endpoint {
            address: we.address.clone().unwrap_or_default(),
            ports: default_ports(&we.ports),
            labels: we.labels.clone(),
            locality: we.locality.clone().unwrap_or_default().into(),
            ready: true,
            service_account: we.service_account.as_deref().map(Into::into),
        })
        .collect();
    if let Some(sel) = &s.workload_selector {
        for p in ix.pods.get(ns).into_iter().flatten() {
            let labels = p.metadata.labels.as_ref();
            if !matches(&sel.labels, labels) {
                continue;
            }
            if let Some(ip) = p.status.as_ref().and_then(|st| st.pod_ip.clone()) {
                endpoints.push(Endpoint {
                    address: ip,
                    ports: default_ports(&BTreeMap::new()),
                    labels: labels.cloned().unwrap_or_default(),
                    locality: locality(labels, None).into(),
                    ready: pod_ready(p),
                    service_account: p
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.as_deref())
                        .map(Into::into),
                });
            }
        }
    }
    endpoints.sort_by(|a, b| a.address.cmp(&b.address));
    let sans = subject_alt_names(trust_domain, ns, &endpoints, &s.subject_alt_names);
    s.hosts
        .iter()
        .map(|h| Service {
            hostname: h.clone(),
            namespace: ns.into(),
            origin: "ServiceEntry".into(),
            addresses: s.addresses.clone(),
            ports: ports.clone(),
            endpoints: endpoints.clone(),
            export_to: s.export_to.clone(),
            location: Some(s.location.clone().unwrap_or_else(|| "MESH_EXTERNAL".into())),
            resolution: Some(s.resolution.clone().unwrap_or_else(|| "NONE".into())),
            subject_alt_names: sans.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
