//! What changed from one snapshot to the next, when only services did: the
//! hosts, and from which namespaces each could be seen. The sync stream uses
//! it to tell, without building a view, that a proxy's view did not change
//! (an endpoint of a service in another namespace moved), and sends that
//! proxy only the new version number. In a large mesh most endpoint changes
//! concern a few proxies; building every proxy's view for each was the
//! agent's largest cost.
//!
//! Conservative by construction: any difference outside the services
//! (routes, policies, settings, pods' tracing) gives no [`SnapshotChange`],
//! and [`Reach`] may name more namespaces than the views really include,
//! never fewer.

use super::accepted::Accepted;
use super::snapshot::Snapshot;
use mesh_api::syncapi::Service;
use std::collections::BTreeSet;
use std::sync::Arc;

pub use super::snapshot_change::{Reach, SnapshotChange};

impl SnapshotChange {
    /// `None` unless everything but the services is the same in both.
    pub fn between(prev: &Snapshot, next: &Snapshot) -> Option<SnapshotChange> {
        if prev.version == 0 || !same_apart_from_services(prev, next) {
            return None;
        }
        // Both maps are sorted by hostname: one walk over the two, not a
        // lookup per service (10,000 of them at every endpoint change).
        let mut changed: BTreeSet<&str> = BTreeSet::new();
        let mut a = prev.services.iter().peekable();
        let mut b = next.services.iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Equal => {
                        if !(Arc::ptr_eq(va, vb) || va == vb) {
                            changed.insert(kb);
                        }
                        a.next();
                        b.next();
                    }
                    std::cmp::Ordering::Less => {
                        changed.insert(ka); // removed
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        changed.insert(kb); // added
                        b.next();
                    }
                },
                (Some((ka, _)), None) => {
                    changed.insert(ka);
                    a.next();
                }
                (None, Some((kb, _))) => {
                    changed.insert(kb);
                    b.next();
                }
                (None, None) => break,
            }
        }
        Some(SnapshotChange::of(prev, next, changed))
    }

    /// [`SnapshotChange::between`] for a `next` made from `prev` by replacing
    /// at most the services named by `candidates`, everything else shared
    /// (`compile_endpoints`): compares those alone, not the whole registry.
    pub fn among<'a>(
        prev: &Snapshot,
        next: &Snapshot,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Option<SnapshotChange> {
        if prev.version == 0 {
            return None;
        }
        let changed = candidates
            .into_iter()
            .filter(|h| match (prev.services.get(*h), next.services.get(*h)) {
                (Some(a), Some(b)) => !(Arc::ptr_eq(a, b) || a == b),
                (None, None) => false,
                _ => true,
            })
            .collect();
        Some(SnapshotChange::of(prev, next, changed))
    }

    fn of(prev: &Snapshot, next: &Snapshot, changed: BTreeSet<&str>) -> SnapshotChange {
        let endpoints_only = changed.iter().all(|h| {
            matches!((prev.services.get(*h), next.services.get(*h)),
                (Some(a), Some(b)) if same_but_endpoints(a, b))
        });
        let hosts = changed
            .into_iter()
            .map(|h| (h.to_string(), reach(next, h)))
            .collect();
        SnapshotChange {
            prev_version: prev.version,
            hosts,
            endpoints_only,
        }
    }
}

/// `a` and `b` are the same service apart from its endpoints and the
/// identities derived from them. (Destructured whole, so a field added to
/// `Service` must be placed on one side or the other here.)
fn same_but_endpoints(a: &Service, b: &Service) -> bool {
    let Service {
        hostname,
        namespace,
        origin,
        addresses,
        ports,
        endpoints: _,
        export_to,
        location,
        resolution,
        subject_alt_names: _,
    } = a;
    *hostname == b.hostname
        && *namespace == b.namespace
        && *origin == b.origin
        && *addresses == b.addresses
        && *ports == b.ports
        && *export_to == b.export_to
        && *location == b.location
        && *resolution == b.resolution
}

/// The namespaces whose proxies may have `host` in their scope: its own, those
/// its `exportTo` names, those with a VirtualService routing to it; every one
/// for the root namespace's services or an `exportTo` the rules above cannot
/// follow.
fn reach(snap: &Snapshot, host: &str) -> Reach {
    let Some(svc) = snap.services.get(host) else {
        return Reach::Namespaces(BTreeSet::new());
    };
    if svc.namespace == snap.settings.root_namespace {
        return Reach::All;
    }
    let mut namespaces = BTreeSet::from([svc.namespace.clone()]);
    for e in &svc.export_to {
        match e.as_str() {
            "*" | "." | "~" => {}
            n => {
                namespaces.insert(n.to_string());
            }
        }
    }
    for ns in snap.vs_destinations().namespaces_routing_to(host) {
        if !namespaces.contains(ns) {
            namespaces.insert(ns.clone());
        }
    }
    Reach::Namespaces(namespaces)
}

fn same_apart_from_services(a: &Snapshot, b: &Snapshot) -> bool {
    fn lists(x: &Snapshot) -> [&Vec<Accepted>; 7] {
        [
            &x.virtual_services,
            &x.destination_rules,
            &x.gateways,
            &x.sidecars,
            &x.peer_authentications,
            &x.authorization_policies,
            &x.telemetries,
        ]
    }
    (Arc::ptr_eq(&a.settings, &b.settings) || a.settings == b.settings)
        && lists(a)
            .into_iter()
            .zip(lists(b))
            .all(|(x, y)| same_accepted(x, y))
        && (Arc::ptr_eq(&a.pod_tracing, &b.pod_tracing) || a.pod_tracing == b.pod_tracing)
        && (Arc::ptr_eq(&a.secrets, &b.secrets) || a.secrets == b.secrets)
        && (Arc::ptr_eq(&a.selector_services, &b.selector_services)
            || a.selector_services == b.selector_services)
}

fn same_accepted(a: &[Accepted], b: &[Accepted]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.key == y.key
                && x.hosts == y.hosts
                && x.export_to == y.export_to
                && (Arc::ptr_eq(&x.object, &y.object) || x.object == y.object)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_changed_since_unions_the_remembered_changes_back_to_a_version() {
        let change = |prev_version: u64, hosts: &[&str]| {
            Arc::new(SnapshotChange {
                prev_version,
                hosts: hosts.iter().map(|h| (h.to_string(), Reach::All)).collect(),
                endpoints_only: true,
            })
        };
        let snap = Snapshot {
            version: 13,
            recent_changes: Arc::new(
                [
                    change(10, &["a"]),
                    change(11, &["b"]),
                    change(12, &["a", "c"]),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let since = |v| {
            snap.hosts_changed_since(v).map(|h| {
                h.into_iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(since(13), Some(vec![]));
        assert_eq!(since(12), Some(vec!["a", "c"]));
        assert_eq!(since(11), Some(vec!["a", "b", "c"]));
        assert_eq!(since(10), Some(vec!["a", "b", "c"]));
        // Older than what is remembered, or a version between two: unknown.
        assert_eq!(since(9), None);
        assert_eq!(since(14), None);
    }
}
