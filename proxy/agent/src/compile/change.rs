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

use super::{Accepted, Snapshot};
use mesh_api::syncapi::Service;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// From which proxy namespaces a changed host can be part of a namespace-scoped
/// view (on-demand hosts and Sidecars are checked by the stream itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The root namespace's services, and anything where unsure.
    All,
    Namespaces(BTreeSet<String>),
}

impl Reach {
    pub fn admits(&self, ns: &str) -> bool {
        match self {
            Reach::All => true,
            Reach::Namespaces(n) => n.contains(ns),
        }
    }
}

/// Snapshot `prev_version` → this one: only these services differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChange {
    pub prev_version: u64,
    /// Changed, added or removed hosts. A removed host reaches no namespace:
    /// it matters only to views that still have it.
    pub hosts: BTreeMap<String, Reach>,
    /// Every changed host is in both snapshots and differs only in its
    /// endpoints (and the identities they run as): no view gains or loses a
    /// service, so a view that has one of them is patched, not rebuilt, and
    /// a proxy whose view has none of them is not even woken.
    pub endpoints_only: bool,
}

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
    use crate::compile::{compile, Settings};
    use crate::store::Store;

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

    fn store(files: &[(&str, String)]) -> Store {
        let mut s = Store::default();
        for (origin, text) in files {
            let (objects, errors) = crate::objects::parse_yaml(text);
            assert!(errors.is_empty(), "{errors:?}");
            s.apply(crate::store::SourceEvent::Replace {
                origin: origin.to_string(),
                objects: objects.into_iter().map(|(_, o)| o).collect(),
                errors: vec![],
            });
        }
        s
    }

    fn svc(name: &str, ns: &str, ip: &str, export: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}, annotations: {{networking.istio.io/exportTo: \"{export}\"}}}}\n\
             spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-a, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\n\
             endpoints: [{{addresses: [{ip}], conditions: {{ready: true}}}}]\n"
        )
    }

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: to-b, namespace: front}\n\
        spec: {hosts: [x.front.svc.cluster.local], http: [{route: [{destination: {host: b.back.svc.cluster.local}}]}]}\n";

    fn snaps(before: &[(&str, String)], after: &[(&str, String)]) -> Option<SnapshotChange> {
        let settings = Arc::new(Settings::default());
        let a = compile(&store(before), &settings, 1);
        let b = compile(&store(after), &settings, 2);
        SnapshotChange::between(&a, &b)
    }

    #[test]
    fn an_endpoint_change_names_its_host_and_who_can_see_it() {
        let base = |ip: &str| {
            vec![
                ("a", svc("a", "back", "10.0.0.1", "*")),
                ("b", svc("b", "back", ip, "*")),
                ("c", svc("c", "other", "10.0.0.3", "shop")),
                ("r", svc("r", "istio-system", "10.0.0.4", "*")),
                ("vs", VS.to_string()),
            ]
        };
        let c = snaps(&base("10.0.0.2"), &base("10.0.0.9")).unwrap();
        assert_eq!(c.prev_version, 1);
        let hosts: Vec<&str> = c.hosts.keys().map(String::as_str).collect();
        assert_eq!(hosts, ["b.back.svc.cluster.local"]);
        assert!(c.endpoints_only, "only b's endpoint moved");
        let reach = &c.hosts["b.back.svc.cluster.local"];
        assert!(reach.admits("back"));
        assert!(
            reach.admits("front"),
            "a VirtualService of front routes to it"
        );
        assert!(!reach.admits("shop"));

        // exportTo naming a namespace; the root namespace reaches everyone.
        let mut after = base("10.0.0.2");
        after[2].1 = svc("c", "other", "10.0.0.30", "shop");
        after[3].1 = svc("r", "istio-system", "10.0.0.40", "*");
        let c = snaps(&base("10.0.0.2"), &after).unwrap();
        assert!(c.hosts["c.other.svc.cluster.local"].admits("shop"));
        assert!(!c.hosts["c.other.svc.cluster.local"].admits("front"));
        assert_eq!(c.hosts["r.istio-system.svc.cluster.local"], Reach::All);
    }

    #[test]
    fn added_and_removed_hosts_count_as_changed() {
        let before = vec![("a", svc("a", "back", "10.0.0.1", "*"))];
        let after = vec![("b", svc("b", "back", "10.0.0.2", "*"))];
        let c = snaps(&before, &after).unwrap();
        assert!(c.hosts["b.back.svc.cluster.local"].admits("back"));
        assert!(!c.hosts["a.back.svc.cluster.local"].admits("back"));
        assert_eq!(c.hosts.len(), 2);
        assert!(!c.endpoints_only, "a service came and one went");
        // Kept, added after it, and one before it removed: the walk over
        // both sorted maps sees each.
        let before = vec![
            ("a", svc("a", "back", "10.0.0.1", "*")),
            ("m", svc("m", "back", "10.0.0.5", "*")),
        ];
        let after = vec![
            ("m", svc("m", "back", "10.0.0.5", "*")),
            ("z", svc("z", "back", "10.0.0.6", "*")),
        ];
        let c = snaps(&before, &after).unwrap();
        let hosts: Vec<&str> = c.hosts.keys().map(String::as_str).collect();
        assert_eq!(
            hosts,
            ["a.back.svc.cluster.local", "z.back.svc.cluster.local"]
        );
    }

    #[test]
    fn a_changed_port_is_more_than_an_endpoint_change() {
        let before = vec![("a", svc("a", "back", "10.0.0.1", "*"))];
        let after = vec![(
            "a",
            svc("a", "back", "10.0.0.1", "*").replace("port: 80}", "port: 81}"),
        )];
        let c = snaps(&before, &after).unwrap();
        assert_eq!(c.hosts.len(), 1);
        assert!(!c.endpoints_only);
    }

    #[test]
    fn anything_else_changing_gives_no_change_record() {
        let before = vec![("a", svc("a", "back", "10.0.0.1", "*"))];
        let mut after = before.clone();
        after.push(("vs", VS.to_string()));
        assert_eq!(snaps(&before, &after), None);
        // The same objects parsed again (new allocations) are no change at all.
        let c = snaps(&after, &after).unwrap();
        assert!(c.hosts.is_empty());
    }
}
