//! Checks that need the whole config, as `istioctl analyze` does them: a route's
//! subset must exist in a DestinationRule for its host; two mesh VirtualServices of
//! one namespace must not claim the same host; referenced gateways should exist.

use super::accepted::{fqdn, Accepted};
use super::snapshot::Snapshot;
use mesh_api::networking::Destination;
use mesh_api::syncapi::Rejection;
use std::collections::{BTreeMap, HashMap};

pub use super::destinations::{host_matches, VsDestinations};

/// True when the VirtualService applies to sidecars (not only to gateways).
pub fn binds_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

/// Splits VirtualServices into accepted ones and rejections.
pub fn check_virtual_services(
    all: Vec<Accepted>,
    snap: &Snapshot,
) -> (Vec<Accepted>, Vec<Rejection>, Vec<String>) {
    let domain = &snap.settings.domain_suffix;
    let root = &snap.settings.root_namespace;
    let mut ok = Vec::new();
    let mut rejected = Vec::new();
    let mut warnings = Vec::new();
    let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
    // DestinationRules by exact host, wildcard ones apart: subset lookups stay cheap.
    let mut by_host: HashMap<&str, Vec<&Accepted>> = HashMap::new();
    let mut wildcard: Vec<&Accepted> = Vec::new();
    for dr in snap.destination_rules.iter() {
        if dr.hosts[0].starts_with('*') {
            wildcard.push(dr);
        } else {
            by_host.entry(dr.hosts[0].as_str()).or_default().push(dr);
        }
    }
    for vs in all {
        let ns = vs.key.namespace.clone();
        let spec = vs.vs();
        let mut errors = Vec::new();
        let mut dests: Vec<(String, &Destination)> = Vec::new();
        for (i, h) in spec.http.iter().enumerate() {
            for (j, d) in h.route.iter().enumerate() {
                dests.push((
                    format!("spec.http[{i}].route[{j}].destination"),
                    &d.destination,
                ));
            }
        }
        for (i, t) in spec.tls.iter().enumerate() {
            for (j, d) in t.route.iter().enumerate() {
                dests.push((
                    format!("spec.tls[{i}].route[{j}].destination"),
                    &d.destination,
                ));
            }
        }
        for (i, t) in spec.tcp.iter().enumerate() {
            for (j, d) in t.route.iter().enumerate() {
                dests.push((
                    format!("spec.tcp[{i}].route[{j}].destination"),
                    &d.destination,
                ));
            }
        }
        for (path, d) in dests {
            let Some(subset) = &d.subset else { continue };
            let host = fqdn(&d.host, &ns, domain);
            let svc_ns = snap.services.get(&host).map(|s| s.namespace.as_str());
            let candidates = by_host
                .get(host.as_str())
                .into_iter()
                .flatten()
                .chain(wildcard.iter());
            let found = candidates.into_iter().any(|dr| {
                let drns = dr.key.namespace.as_str();
                (drns == ns || Some(drns) == svc_ns || drns == root)
                    && host_matches(&dr.hosts[0], &host)
                    && dr.dr().subsets.iter().any(|s| &s.name == subset)
            });
            if !found {
                errors.push(format!(
                    "error: {}: {path}.subset: subset not found in any DestinationRule for host {host} (value {:?})",
                    vs.key, subset
                ));
            }
        }
        if binds_mesh(&spec.gateways) && errors.is_empty() {
            for (i, h) in vs.hosts.iter().enumerate() {
                if let Some(owner) = claimed.get(&(ns.clone(), h.clone())) {
                    errors.push(format!(
                        "error: {}: spec.hosts[{i}]: host is already routed by VirtualService {owner} in this namespace (value {:?})",
                        vs.key, spec.hosts[i]
                    ));
                }
            }
        }
        for (i, g) in spec.gateways.iter().enumerate() {
            if g == "mesh" {
                continue;
            }
            let (gns, gname) = g.split_once('/').unwrap_or((&ns, g));
            if !snap
                .gateways
                .iter()
                .any(|x| x.key.namespace == gns && x.key.name == gname)
            {
                warnings.push(format!("warning: {}: spec.gateways[{i}]: gateway {gns}/{gname} not found (value {g:?})", vs.key));
            }
        }
        if errors.is_empty() {
            if binds_mesh(&spec.gateways) {
                for h in &vs.hosts {
                    claimed.insert((ns.clone(), h.clone()), vs.key.name.clone());
                }
            }
            ok.push(vs);
        } else {
            rejected.push(Rejection {
                resource: vs.key.to_string(),
                errors,
            });
        }
    }
    (ok, rejected, warnings)
}
