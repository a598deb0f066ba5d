//! The analyzers: pure functions from the agent's store and compiled snapshot (plus
//! the workloads' pod templates) to messages. Codes are Istio's where Istio has the
//! check (users search for them); `MESH0001` (and `MESH0002` in the caller) are ours.

use std::collections::{BTreeMap, BTreeSet};

use mesh_agent::compile::{cross_host_matches, fqdn, protocol, Snapshot};
use mesh_agent::objects::KubeObject;
use mesh_agent::store::Store;
use mesh_agent::validate::Severity;
use mesh_api::networking::Destination;
use mesh_api::resource::IstioResource;

use super::workloads::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        }
    }
}

/// One finding: level, code (`IST0101`), code name, the resource
/// (`Kind namespace/name`, or a file), what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Message {
    pub level: Level,
    pub code: &'static str,
    pub name: &'static str,
    pub resource: String,
    pub text: String,
    pub hint: String,
}

const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "istio-system"];
type Labels = BTreeMap<String, String>;

fn msg(
    level: Level,
    code: &'static str,
    name: &'static str,
    resource: String,
    text: String,
    hint: String,
) -> Message {
    Message {
        level,
        code,
        name,
        resource,
        text,
        hint,
    }
}

fn res(kind: &str, ns: &str, name: &str) -> String {
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {ns}/{name}")
    }
}

fn subset_of(labels: &Labels, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Every check, sorted (errors first).
pub fn run(store: &Store, snap: &Snapshot, workloads: &[Workload]) -> Vec<Message> {
    let namespaces: BTreeMap<String, Labels> = store
        .objects
        .values()
        .filter_map(|e| match &*e.object {
            KubeObject::Namespace(n) => Some((
                n.metadata.name.clone().unwrap_or_default(),
                n.metadata.labels.clone().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    validation(store, &mut out);
    virtual_services(store, snap, &mut out);
    destination_rules(store, snap, workloads, &mut out);
    injection(&namespaces, workloads, &mut out);
    strict_mtls(snap, &namespaces, workloads, &mut out);
    port_names(store, &mut out);
    out.sort();
    out.dedup();
    out
}

/// The agent's own per-resource validation (what its webhook would refuse).
fn validation(store: &Store, out: &mut Vec<Message>) {
    for (origin, errs) in &store.origin_errors {
        for e in errs {
            out.push(msg(
                Level::Error,
                "IST0106",
                "SchemaValidationError",
                origin.clone(),
                e.clone(),
                "fix the document so it parses as a Kubernetes object".into(),
            ));
        }
    }
    for (key, e) in &store.objects {
        for f in e.findings.iter() {
            let level = if f.severity == Severity::Error {
                Level::Error
            } else {
                Level::Warning
            };
            let value = if f.value.is_empty() {
                String::new()
            } else {
                format!(" (value {})", f.value)
            };
            out.push(msg(
                level,
                "IST0106",
                "SchemaValidationError",
                res(&key.kind, &key.namespace, &key.name),
                format!("{}: {}{value}", f.path, f.message),
                format!(
                    "correct {} (the agent {} this resource)",
                    f.path,
                    if level == Level::Error {
                        "rejects"
                    } else {
                        "still applies"
                    }
                ),
            ));
        }
    }
}

/// Istio resources of one kind that passed per-resource validation.
fn valid<'a>(
    store: &'a Store,
    kind: &'a str,
) -> impl Iterator<Item = (&'a mesh_api::resource::ResourceKey, &'a IstioResource)> + 'a {
    store
        .objects
        .iter()
        .filter_map(move |(k, e)| match &*e.object {
            KubeObject::Istio(r)
                if r.kind() == kind
                    && !e.findings.iter().any(|f| f.severity == Severity::Error) =>
            {
                Some((k, r))
            }
            _ => None,
        })
}

fn host_known(snap: &Snapshot, host: &str) -> bool {
    host.starts_with('*')
        || snap.services.contains_key(host)
        || snap.services.keys().any(|s| cross_host_matches(s, host))
}

fn virtual_services(store: &Store, snap: &Snapshot, out: &mut Vec<Message>) {
    let domain = &snap.settings.domain_suffix;
    let root = &snap.settings.root_namespace;
    let mut claimed: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (key, r) in valid(store, "VirtualService") {
        let IstioResource::VirtualService(vs) = r else {
            continue;
        };
        let (ns, me) = (
            &key.namespace,
            res("VirtualService", &key.namespace, &key.name),
        );
        let spec = &vs.spec;
        let mut dests: Vec<&Destination> = Vec::new();
        dests.extend(
            spec.http
                .iter()
                .flat_map(|h| h.route.iter().map(|d| &d.destination)),
        );
        dests.extend(
            spec.tls
                .iter()
                .flat_map(|h| h.route.iter().map(|d| &d.destination)),
        );
        dests.extend(
            spec.tcp
                .iter()
                .flat_map(|h| h.route.iter().map(|d| &d.destination)),
        );
        for d in dests {
            let host = fqdn(&d.host, ns, domain);
            if !host_known(snap, &host) {
                out.push(msg(Level::Error, "IST0101", "ReferencedResourceNotFound", me.clone(), format!("Referenced host not found: {:?}", d.host), format!("create a Service or ServiceEntry for {host}, or fix the host (short names resolve in namespace {ns})")));
            }
            let Some(subset) = &d.subset else { continue };
            let svc_ns = snap.services.get(&host).map(|s| s.namespace.as_str());
            let found = snap.destination_rules.iter().any(|dr| {
                let drns = dr.key.namespace.as_str();
                (drns == ns || Some(drns) == svc_ns || drns == root)
                    && cross_host_matches(&dr.hosts[0], &host)
                    && dr.dr().subsets.iter().any(|s| &s.name == subset)
            });
            if !found {
                out.push(msg(Level::Error, "IST0101", "ReferencedResourceNotFound", me.clone(), format!("Referenced host+subset in destinationrule not found: \"{}+{subset}\"", d.host), format!("define subset {subset} in a DestinationRule for {host} (namespace {ns}, the service's, or {root}), or drop the subset")));
            }
        }
        for g in &spec.gateways {
            if g == "mesh" {
                continue;
            }
            let (gns, gname) = g.split_once('/').unwrap_or((ns, g));
            if !snap
                .gateways
                .iter()
                .any(|x| x.key.namespace == gns && x.key.name == gname)
            {
                out.push(msg(Level::Error, "IST0101", "ReferencedResourceNotFound", me.clone(), format!("Referenced gateway not found: \"{gns}/{gname}\""), format!("create Gateway {gns}/{gname} or fix spec.gateways (write namespace/name for another namespace)")));
            }
        }
        if mesh_agent::compile::binds_mesh(&spec.gateways) {
            for h in &spec.hosts {
                claimed
                    .entry((ns.clone(), fqdn(h, ns, domain)))
                    .or_default()
                    .push(key.name.clone());
            }
        }
    }
    for ((ns, host), names) in claimed {
        if names.len() > 1 {
            for n in &names {
                out.push(msg(Level::Error, "IST0109", "ConflictingMeshGatewayVirtualServiceHosts", res("VirtualService", &ns, n), format!("The VirtualServices {} associated with mesh gateway define the same host {host}", names.iter().map(|n| format!("{ns}/{n}")).collect::<Vec<_>>().join(",")), "merge them into one VirtualService per host (the agent keeps only the first)".into()));
            }
        }
    }
}

/// Kubernetes Services from the input: FQDN -> (namespace, selector).
fn k8s_services(store: &Store, domain: &str) -> BTreeMap<String, (String, Option<Labels>)> {
    store
        .objects
        .iter()
        .filter_map(|(k, e)| match &*e.object {
            KubeObject::Service(s) => Some((
                fqdn(&k.name, &k.namespace, domain),
                (
                    k.namespace.clone(),
                    s.spec.as_ref().and_then(|s| s.selector.clone()),
                ),
            )),
            _ => None,
        })
        .collect()
}

fn destination_rules(
    store: &Store,
    snap: &Snapshot,
    workloads: &[Workload],
    out: &mut Vec<Message>,
) {
    let services = k8s_services(store, &snap.settings.domain_suffix);
    for dr in snap.destination_rules.iter() {
        let me = res("DestinationRule", &dr.key.namespace, &dr.key.name);
        let host = &dr.hosts[0];
        if !host_known(snap, host) {
            out.push(msg(
                Level::Warning,
                "IST0101",
                "ReferencedResourceNotFound",
                me.clone(),
                format!("Referenced host not found: {:?}", dr.dr().host),
                format!("create a Service or ServiceEntry for {host}, or fix spec.host"),
            ));
            continue;
        }
        let Some((svc_ns, Some(selector))) = services.get(host) else {
            continue;
        };
        let pods: Vec<&Workload> = workloads
            .iter()
            .filter(|w| &w.namespace == svc_ns && subset_of(&w.labels, selector))
            .collect();
        for s in &dr.dr().subsets {
            if !pods.iter().any(|w| subset_of(&w.labels, &s.labels)) {
                out.push(msg(Level::Warning, "IST0173", "DestinationRuleSubsetNotSelectPods", me.clone(), format!("Subset {:?} selects no pods of {host} (labels {:?})", s.name, s.labels), format!("deploy pods with labels {:?} behind the service, or fix the subset's labels", s.labels)));
            }
        }
    }
}

/// Would the default-revision injector give this workload a sidecar?
pub fn has_sidecar(w: &Workload, ns_labels: Option<&Labels>) -> bool {
    if w.has_proxy {
        return true;
    }
    let opt = |k: &str| {
        w.labels
            .get(k)
            .or_else(|| w.annotations.get(k))
            .map(String::as_str)
    };
    if opt("sidecar.istio.io/inject") == Some("false")
        || SYSTEM_NAMESPACES.contains(&w.namespace.as_str())
    {
        return false;
    }
    let ns = ns_labels.cloned().unwrap_or_default();
    match (
        ns.get("istio-injection").map(String::as_str),
        ns.get("istio.io/rev").map(String::as_str),
    ) {
        (Some(v), _) => v == "enabled",
        (None, Some(rev)) => rev == "default",
        (None, None) => {
            let pod_rev = w.labels.get("istio.io/rev").map(String::as_str);
            pod_rev == Some("default")
                || (pod_rev.is_none()
                    && w.labels.get("sidecar.istio.io/inject").map(String::as_str) == Some("true"))
        }
    }
}

fn injection(
    namespaces: &BTreeMap<String, Labels>,
    workloads: &[Workload],
    out: &mut Vec<Message>,
) {
    let with_workloads: BTreeSet<&str> = workloads
        .iter()
        .map(|w| w.namespace.as_str())
        .filter(|n| !SYSTEM_NAMESPACES.contains(n))
        .collect();
    for ns in with_workloads {
        let labels = namespaces.get(ns).cloned().unwrap_or_default();
        if !labels.contains_key("istio-injection") && !labels.contains_key("istio.io/rev") {
            let seen = if namespaces.contains_key(ns) {
                ""
            } else {
                " (its Namespace object is not in the input; assumed unlabelled)"
            };
            out.push(msg(Level::Info, "IST0102", "NamespaceNotInjected", res("Namespace", "", ns), format!("The namespace is not enabled for Istio injection{seen}"), format!("kubectl label namespace {ns} istio-injection=enabled (or istio-injection=disabled to silence this)")));
        }
    }
}

fn strict_mtls(
    snap: &Snapshot,
    namespaces: &BTreeMap<String, Labels>,
    workloads: &[Workload],
    out: &mut Vec<Message>,
) {
    let root = &snap.settings.root_namespace;
    // (namespace or root, selector) -> (mode, PeerAuthentication name); most specific wins.
    for w in workloads {
        if has_sidecar(w, namespaces.get(&w.namespace)) {
            continue;
        }
        let mut best: Option<(u8, String, String)> = None;
        for pa in snap.peer_authentications.iter() {
            let spec = pa.pa();
            let ns = pa.key.namespace.as_str();
            let rank = match &spec.selector {
                Some(sel) if !sel.match_labels.is_empty() => {
                    if ns != w.namespace || !subset_of(&w.labels, &sel.match_labels) {
                        continue;
                    }
                    3
                }
                _ if ns == w.namespace => 2,
                _ if ns == root => 1,
                _ => continue,
            };
            let strict_port = spec
                .port_level_mtls
                .values()
                .any(|m| m.mode.as_deref() == Some("STRICT"));
            let mode = spec
                .mtls
                .as_ref()
                .and_then(|m| m.mode.clone())
                .filter(|m| m != "UNSET");
            let mode = match (mode, strict_port) {
                (Some(m), _) => m,
                (None, true) => "STRICT".into(),
                (None, false) => continue,
            };
            if best.as_ref().is_none_or(|b| rank > b.0) {
                best = Some((rank, mode, format!("{ns}/{}", pa.key.name)));
            }
        }
        if let Some((_, mode, pa)) = best {
            if mode == "STRICT" {
                out.push(msg(Level::Warning, "MESH0001", "StrictMtlsWithoutSidecar", res(&w.kind, &w.namespace, &w.name), format!("PeerAuthentication {pa} requires STRICT mTLS but this workload gets no sidecar, so nothing enforces it and meshed clients cannot use mTLS to it"), format!("inject a sidecar (label namespace {} istio-injection=enabled, or the pod sidecar.istio.io/inject=\"true\"), or add a PERMISSIVE PeerAuthentication selecting it", w.namespace)));
            }
        }
    }
}

fn port_names(store: &Store, out: &mut Vec<Message>) {
    for (k, e) in &store.objects {
        let KubeObject::Service(s) = &*e.object else {
            continue;
        };
        if SYSTEM_NAMESPACES.contains(&k.namespace.as_str()) {
            continue;
        }
        for p in s
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
        {
            if protocol::for_service_port(
                p.name.as_deref(),
                p.protocol.as_deref(),
                p.app_protocol.as_deref(),
            ) == "UNKNOWN"
            {
                out.push(msg(Level::Info, "IST0118", "PortNameIsNotUnderNamingConvention", res("Service", &k.namespace, &k.name), format!("Port name {:?} (port: {}, targetPort: {}) doesn't follow the naming convention of Istio port.", p.name.clone().unwrap_or_default(), p.port, p.target_port.as_ref().and_then(|t| serde_json::to_value(t).ok()).map(|t| t.to_string().trim_matches('"').to_string()).unwrap_or_else(|| p.port.to_string())), "name the port <protocol>[-<suffix>] (http, http2, https, grpc, tcp, tls, mongo, mysql, redis, udp; e.g. http-web) or set appProtocol".into()));
            }
        }
    }
}
