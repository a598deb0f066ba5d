//! [`super::change::SnapshotChange::between`] on compiled snapshots: which
//! hosts an edit changes and who can see them. Its own file because these
//! tests compile stores, and `change.rs` is used by the compiler.

use super::change::{Reach, SnapshotChange};
use super::{compile, Settings};
use crate::store::Store;
use std::sync::Arc;

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
