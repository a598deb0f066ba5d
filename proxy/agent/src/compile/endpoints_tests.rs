//! [`compile_endpoints`] against a full compile of the same store, over a
//! series of EndpointSlice changes: endpoints moving, a slice relabelled from
//! one service to another, slices added and removed, a slice of no service.

use super::{compile, compile_cached, compile_endpoints, CompileCache, Settings, Snapshot};
use crate::store::{SourceEvent, Store};
use std::sync::Arc;

fn replace(store: &mut Store, origin: &str, yaml: &str) {
    let (objects, errors) = crate::objects::parse_yaml(yaml);
    assert!(errors.is_empty(), "{errors:?}");
    store.apply(SourceEvent::Replace {
        origin: origin.into(),
        objects: objects.into_iter().map(|(_, o)| o).collect(),
        errors: vec![],
    });
}

fn service(name: &str, ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec: {{clusterIP: 10.96.0.{}, selector: {{app: {name}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n",
        name.len()
    )
}

fn slice(name: &str, ns: &str, svc: &str, ips: &[&str], pod: Option<&str>) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
    );
    for ip in ips {
        y.push_str(&format!(
            "- addresses: [{ip}]\n  conditions: {{ready: true}}\n"
        ));
        if let Some(p) = pod {
            y.push_str(&format!(
                "  targetRef: {{kind: Pod, name: {p}, namespace: {ns}}}\n"
            ));
        }
    }
    y
}

fn pod(name: &str, ns: &str, app: &str, ip: &str, sa: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}, version: v1}}}}\n\
         spec: {{serviceAccountName: {sa}, containers: [{{name: app, image: x}}]}}\n\
         status: {{podIP: {ip}, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
    )
}

fn assert_same(fast: &Snapshot, full: &Snapshot, step: &str) {
    let a: Vec<_> = fast.services.iter().map(|(h, s)| (h, &**s)).collect();
    let b: Vec<_> = full.services.iter().map(|(h, s)| (h, &**s)).collect();
    assert_eq!(a, b, "{step}: services");
    let keys = |s: &Snapshot| {
        s.virtual_services
            .iter()
            .chain(s.destination_rules.iter())
            .map(|a| a.key.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(fast), keys(full), "{step}: routes");
    assert_eq!(fast.rejected, full.rejected, "{step}: rejections");
    assert_eq!(fast.version, full.version, "{step}: version");
}

#[test]
fn an_endpoint_slice_change_rebuilds_its_services_as_a_full_compile_would() {
    let settings = Arc::new(Settings::default());
    let mut store = Store::default();
    replace(&mut store, "a", &service("api", "shop"));
    replace(&mut store, "b", &service("web", "shop"));
    replace(&mut store, "c", &service("db", "bank"));
    replace(
        &mut store,
        "p",
        &pod("api-0", "shop", "api", "10.1.0.5", "api-sa"),
    );
    replace(
        &mut store,
        "q",
        &pod("db-0", "bank", "db", "10.2.0.5", "db-sa"),
    );
    replace(
        &mut store,
        "s1",
        &slice("api-x", "shop", "api", &["10.1.0.5"], Some("api-0")),
    );
    replace(&mut store, "vs", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: shop}\nspec: {hosts: [api], http: [{route: [{destination: {host: api}}]}]}\n");
    let mut cache = CompileCache::default();
    let mut prev = compile_cached(&store, &settings, 1, &mut cache);
    store.take_changes();

    type Step = Box<dyn Fn(&mut Store)>;
    let steps: Vec<(&str, Step)> = vec![
        (
            "an endpoint added",
            Box::new(|s| {
                replace(
                    s,
                    "s1",
                    &slice(
                        "api-x",
                        "shop",
                        "api",
                        &["10.1.0.5", "10.1.0.6"],
                        Some("api-0"),
                    ),
                )
            }),
        ),
        (
            "a second slice",
            Box::new(|s| replace(s, "s2", &slice("api-y", "shop", "api", &["10.1.0.7"], None))),
        ),
        (
            "a slice for the pod-backed db",
            Box::new(|s| {
                replace(
                    s,
                    "s3",
                    &slice("db-x", "bank", "db", &["10.2.0.9"], Some("db-0")),
                )
            }),
        ),
        (
            "relabelled to web",
            Box::new(|s| replace(s, "s2", &slice("api-y", "shop", "web", &["10.1.0.7"], None))),
        ),
        (
            "a slice of no service",
            Box::new(|s| {
                replace(
                    s,
                    "s4",
                    &slice("ghost-x", "shop", "ghost", &["10.1.0.8"], None),
                )
            }),
        ),
        (
            "a slice removed",
            Box::new(|s| {
                s.apply(SourceEvent::Remove {
                    origin: "s3".into(),
                });
            }),
        ),
        (
            "two slices at once",
            Box::new(|s| {
                replace(s, "s1", &slice("api-x", "shop", "api", &["10.1.0.9"], None));
                replace(
                    s,
                    "s2",
                    &slice("api-y", "shop", "web", &["10.1.0.10"], None),
                );
            }),
        ),
    ];
    for (i, (step, change)) in steps.iter().enumerate() {
        change(&mut store);
        let changes = store.take_changes();
        let version = i as u64 + 2;
        let fast = compile_endpoints(&prev, &store, &changes, version, &mut cache)
            .unwrap_or_else(|| panic!("{step}: not taken as an endpoints-only change"));
        assert_same(&fast, &compile(&store, &settings, version), step);
        // The change it records from the rebuilt hosts is the one a walk
        // over both registries finds.
        let walked = super::change::SnapshotChange::between(&prev, &fast);
        assert_eq!(fast.change.as_deref(), walked.as_ref(), "{step}: change");
        let nothing = *step == "a slice of no service";
        assert_eq!(
            walked.map(|c| c.hosts.is_empty()),
            Some(nothing),
            "{step}: changed hosts"
        );
        prev = fast;
    }

    // Anything but slices: a full compile is needed.
    replace(
        &mut store,
        "p",
        &pod("api-0", "shop", "api", "10.1.0.50", "api-sa"),
    );
    let changes = store.take_changes();
    assert!(compile_endpoints(&prev, &store, &changes, 99, &mut cache).is_none());
    replace(&mut store, "a", &service("api2", "shop"));
    let changes = store.take_changes();
    assert!(compile_endpoints(&prev, &store, &changes, 99, &mut cache).is_none());
}
