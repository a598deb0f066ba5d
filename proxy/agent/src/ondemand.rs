//! On-demand discovery, the agent's half: which service a proxy means when it
//! asks about a destination it does not know (a Service VIP, a pod IP, or a
//! host name from an HTTP authority), under Istio's visibility rules. A proxy
//! that gets an answer adds the host to its requested set and the agent keeps
//! it in that proxy's view ([`crate::view::build_with`]) from then on.
//!
//! Pure: a snapshot and an identity in, a host name (or nothing) out.

use crate::compile::{cross_host_matches, exported, Snapshot};
use mesh_api::syncapi::{ProxyIdentity, Service};
use std::net::IpAddr;

/// The host of the service `target` names for proxy `id`, if it is in the
/// mesh and visible to it: exported to its namespace, and its namespace has no
/// Sidecar (a Sidecar's egress list is the whole of what a proxy may see, as in
/// Istio, and it is in the view already). `None`: not in the mesh for this
/// proxy, the caller treats the destination as outside it.
pub fn lookup(snap: &Snapshot, id: &ProxyIdentity, target: &str) -> Option<String> {
    if id.router || !snap.settings.serves(&id.namespace) || crate::view::has_sidecar(snap, id) {
        return None;
    }
    let visible = snap
        .services
        .values()
        .filter(|s| exported(&s.export_to, &s.namespace, &id.namespace));
    let found: Option<&Service> = match target.parse::<IpAddr>() {
        Ok(ip) => {
            let ip = ip.to_string();
            let mut candidates: Vec<&Service> = visible
                .filter(|s| {
                    s.addresses.contains(&ip) || s.endpoints.iter().any(|e| e.address == ip)
                })
                .map(|s| &**s)
                .collect();
            // A VIP names one service; a pod IP may back several: the first
            // by host name, so every proxy asking gets the same answer.
            candidates.sort_by_key(|s| (!s.addresses.contains(&ip), s.hostname.clone()));
            candidates.first().copied()
        }
        Err(_) => {
            let host = target
                .split(':')
                .next()
                .unwrap_or(target)
                .to_ascii_lowercase();
            let fqdn = expand(&host, &id.namespace, &snap.settings.domain_suffix);
            visible
                .map(|s| &**s)
                .filter(|s| cross_host_matches(&s.hostname, &fqdn) || s.hostname == fqdn)
                .min_by_key(|s| (s.hostname != fqdn, s.hostname.clone()))
        }
    };
    found.map(|s| s.hostname.clone())
}

/// A short Kubernetes name as the proxy's resolver would expand it: `name` in
/// the proxy's namespace, `name.ns` and `name.ns.svc` in the cluster domain.
fn expand(host: &str, ns: &str, domain: &str) -> String {
    match host.matches('.').count() {
        0 => format!("{host}.{ns}.svc.{domain}"),
        1 => format!("{host}.svc.{domain}"),
        _ if host.ends_with(".svc") => format!("{host}.{domain}"),
        _ => host.to_string(),
    }
}
