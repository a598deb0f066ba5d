//! Snapshot compiler and per-proxy views over an in-memory store.

mod common;

use common::store;

use mesh_agent::compile::{compile, Settings, Snapshot, Visibility};
use mesh_agent::objects::parse_yaml;
use mesh_agent::store::SourceEvent;
use mesh_agent::view;
use mesh_api::syncapi::ProxyIdentity;
use std::sync::Arc;

const MESH: &str = include_str!("fixtures/mesh.yaml");
const ISTIO: &str = include_str!("fixtures/istio.yaml");
const BOOKINFO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/samples/bookinfo/networking"
);

fn snap(files: &[(&str, &str)]) -> Snapshot {
    compile(&store(files), &Arc::new(Settings::default()), 7)
}

fn proxy(ns: &str, pod: &str, labels: &[(&str, &str)]) -> ProxyIdentity {
    ProxyIdentity {
        pod: pod.into(),
        namespace: ns.into(),
        service_account: "default".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: vec![],
        router: false,
    }
}

#[test]
fn registry_has_services_ports_protocols_and_endpoints() {
    let s = snap(&[("mesh.yaml", MESH), ("istio.yaml", ISTIO)]);
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    assert_eq!(s.version, 7);
    let hosts: Vec<&str> = s.services.keys().map(String::as_str).collect();
    assert_eq!(
        hosts,
        [
            "api.payments.example",
            "ledger.inventory.svc.cluster.local",
            "stock.inventory.svc.cluster.local",
            "web.shop.svc.cluster.local"
        ]
    );
    let web = &s.services["web.shop.svc.cluster.local"];
    let protos: Vec<(&str, &str)> = web
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.protocol.as_str()))
        .collect();
    assert_eq!(
        protos,
        [
            ("http-web", "HTTP"),
            ("grpc", "GRPC"),
            ("metrics", "UNKNOWN")
        ]
    );
    assert_eq!(web.addresses, ["10.96.0.10"]);
    // From the EndpointSlice: readiness, pod labels, locality, service account.
    assert_eq!(web.endpoints.len(), 2);
    let e1 = &web.endpoints[0];
    assert_eq!(
        (e1.address.as_str(), e1.ready, e1.locality.as_str()),
        ("10.1.0.5", true, "eu/zone-a/")
    );
    assert_eq!(e1.labels["version"], "v1");
    assert_eq!(e1.service_account.as_deref(), Some("web"));
    assert_eq!(e1.ports["http-web"], 8080);
    assert!(!web.endpoints[1].ready);
    // From Pods (no slice): selector match, named targetPort resolved, readiness.
    let stock = &s.services["stock.inventory.svc.cluster.local"];
    let eps: Vec<(&str, bool, u16)> = stock
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e.ready, e.ports["http"]))
        .collect();
    assert_eq!(eps, [("10.2.0.7", true, 8081), ("10.2.0.8", false, 8081)]);
    // ServiceEntry as a service.
    let pay = &s.services["api.payments.example"];
    assert_eq!(
        (pay.origin.as_str(), pay.ports[0].protocol.as_str()),
        ("ServiceEntry", "HTTPS")
    );
    assert_eq!(pay.resolution.as_deref(), Some("DNS"));
}

#[test]
fn proxy_in_a_namespace_gets_only_what_is_exported_to_it() {
    let s = snap(&[("mesh.yaml", MESH), ("istio.yaml", ISTIO)]);
    // "ledger" is exported to "." (inventory only).
    let shop = view::build(&s, &proxy("shop", "web-1", &[("app", "web")]));
    let names: Vec<&str> = shop.services.iter().map(|x| x.hostname.as_str()).collect();
    assert!(
        !names.contains(&"ledger.inventory.svc.cluster.local"),
        "{names:?}"
    );
    assert!(names.contains(&"web.shop.svc.cluster.local"));
    let inv = view::build(&s, &proxy("inventory", "stock-1", &[("app", "stock")]));
    let names: Vec<&str> = inv.services.iter().map(|x| x.hostname.as_str()).collect();
    assert!(
        names.contains(&"ledger.inventory.svc.cluster.local"),
        "{names:?}"
    );
    // By default only what the namespace reaches: inventory never sees shop's services.
    assert!(!names.contains(&"web.shop.svc.cluster.local"), "{names:?}");
    // Mesh visibility (Istio's default) opts out of that, but exportTo still holds.
    let settings = Arc::new(Settings {
        visibility: Visibility::Mesh,
        ..Settings::default()
    });
    let s2 = compile(
        &store(&[("mesh.yaml", MESH), ("istio.yaml", ISTIO)]),
        &settings,
        8,
    );
    let shop = view::build(&s2, &proxy("shop", "web-1", &[]));
    let names: Vec<&str> = shop.services.iter().map(|x| x.hostname.as_str()).collect();
    assert_eq!(
        names,
        [
            "api.payments.example",
            "stock.inventory.svc.cluster.local",
            "web.shop.svc.cluster.local"
        ]
    );
}

#[test]
fn virtual_service_destinations_are_reachable_and_routes_travel_with_them() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: to-stock, namespace: shop}\nspec:\n  hosts: [stock.inventory.svc.cluster.local]\n  http:\n  - timeout: 2s\n    route:\n    - destination: {host: stock.inventory.svc.cluster.local, subset: v1}\n";
    let s = snap(&[("mesh.yaml", MESH), ("istio.yaml", ISTIO), ("vs.yaml", vs)]);
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    let v = view::build(&s, &proxy("shop", "web-1", &[]));
    assert!(v
        .services
        .iter()
        .any(|x| x.hostname == "stock.inventory.svc.cluster.local"));
    assert!(v.virtual_services.contains_key("shop/to-stock"));
    assert!(v.virtual_services.contains_key("inventory/stock"));
    let dr = &v.destination_rules["stock.inventory.svc.cluster.local"];
    assert_eq!(dr.subsets.len(), 2);
}

#[test]
fn sidecar_egress_hosts_narrow_the_view() {
    let sc = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec:\n  egress:\n  - hosts: [\"./api.payments.example\"]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
    let s = snap(&[("mesh.yaml", MESH), ("istio.yaml", ISTIO), ("sc.yaml", sc)]);
    let v = view::build(&s, &proxy("shop", "web-1", &[]));
    let names: Vec<&str> = v.services.iter().map(|x| x.hostname.as_str()).collect();
    assert_eq!(names, ["api.payments.example"]);
    assert_eq!(v.outbound_traffic_policy, "REGISTRY_ONLY");
}

#[test]
fn inbound_policy_for_the_proxys_own_workload() {
    let s = snap(&[("mesh.yaml", MESH), ("istio.yaml", ISTIO)]);
    let web = view::build(&s, &proxy("shop", "web-1", &[("app", "web")]));
    // Workload PA is UNSET: inherits STRICT from the mesh-wide one; port 9100 is DISABLE.
    assert_eq!(web.inbound.mtls_mode, "STRICT");
    assert_eq!(
        web.inbound.port_mtls.get(&9100).map(String::as_str),
        Some("DISABLE")
    );
    assert_eq!(
        web.inbound.authorization.keys().collect::<Vec<_>>(),
        ["shop/web-allow"]
    );
    let other = view::build(&s, &proxy("shop", "other", &[("app", "other")]));
    assert!(other.inbound.authorization.is_empty());
    assert!(other.inbound.port_mtls.is_empty());
    let none = compile(
        &store(&[("mesh.yaml", MESH)]),
        &Arc::new(Settings::default()),
        1,
    );
    assert_eq!(
        view::build(&none, &proxy("shop", "x", &[]))
            .inbound
            .mtls_mode,
        "PERMISSIVE"
    );
}

#[test]
fn rejected_resources_are_listed_and_not_applied_while_the_rest_applies() {
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad, namespace: shop}\nspec:\n  hosts: [web]\n  http:\n  - route:\n    - {destination: {host: web}, weight: 30}\n    - {destination: {host: web}, weight: 30}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: good, namespace: shop}\nspec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {host: web}\n";
    let s = snap(&[("mesh.yaml", MESH), ("vs.yaml", bad)]);
    assert_eq!(s.rejected.len(), 1, "{:?}", s.rejected);
    assert_eq!(s.rejected[0].resource, "VirtualService/shop/bad");
    assert_eq!(s.rejected[0].errors, ["error: VirtualService/shop/bad: spec.http[0].route: total destination weight must be 100 (value 60)"]);
    let names: Vec<&str> = s
        .virtual_services
        .iter()
        .map(|a| a.key.name.as_str())
        .collect();
    assert_eq!(names, ["good"]);
    assert_eq!(s.services.len(), 3);
}

#[test]
fn subsets_must_exist_in_a_destination_rule() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: stock-v3, namespace: inventory}\nspec:\n  hosts: [stock]\n  http:\n  - route:\n    - destination: {host: stock, subset: v3}\n";
    let s = snap(&[
        ("mesh.yaml", MESH),
        (
            "istio.yaml",
            ISTIO
                .replace(
                    "name: stock, namespace: inventory}\nspec:\n  hosts",
                    "name: stock-old, namespace: inventory}\nspec:\n  hosts",
                )
                .as_str(),
        ),
        ("vs.yaml", vs),
    ]);
    let r = s
        .rejected
        .iter()
        .find(|r| r.resource == "VirtualService/inventory/stock-v3")
        .expect("rejected");
    assert_eq!(r.errors, ["error: VirtualService/inventory/stock-v3: spec.http[0].route[0].destination.subset: subset not found in any DestinationRule for host stock.inventory.svc.cluster.local (value \"v3\")"]);
}

#[test]
fn duplicate_hosts_across_virtual_services_reject_the_second() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: shop}\nspec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {host: web}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: shop}\nspec:\n  hosts: [web.shop.svc.cluster.local]\n  http:\n  - route:\n    - destination: {host: web}\n";
    let s = snap(&[("vs.yaml", vs)]);
    assert_eq!(s.rejected.len(), 1);
    assert!(
        s.rejected[0].errors[0].contains(
            "VirtualService/shop/b: spec.hosts[0]: host is already routed by VirtualService a"
        ),
        "{:?}",
        s.rejected
    );
}

/// Each Bookinfo VirtualService file, applied with the DestinationRules it is
/// documented to go with (destination-rule-all.yaml), is accepted as a whole; a
/// VirtualService file applied alone is what `istioctl analyze` flags: a
/// referenced subset without a DestinationRule.
#[test]
fn bookinfo_virtual_services_resolve_subsets_against_the_destination_rules() {
    let read = |f: &str| std::fs::read_to_string(format!("{BOOKINFO}/{f}")).unwrap();
    let drs = read("destination-rule-all.yaml");
    let mut checked = 0;
    for e in std::fs::read_dir(BOOKINFO).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let text = read(&name);
        let s = snap(&[("dr.yaml", &drs), (&name, &text)]);
        assert!(s.rejected.is_empty(), "{name}: {:?}", s.rejected);
        if name.starts_with("virtual-service-") {
            let alone = snap(&[(&name, &text)]);
            assert!(
                !alone.rejected.is_empty(),
                "{name} alone should have dangling subsets"
            );
            assert!(
                alone
                    .rejected
                    .iter()
                    .all(|r| r.errors.iter().all(|e| e.contains("subset not found"))),
                "{name}: {:?}",
                alone.rejected
            );
        }
        checked += 1;
    }
    assert!(checked >= 20);
}

#[test]
fn malformed_documents_are_reported_and_the_rest_of_the_file_applies() {
    let text = format!("{MESH}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: typo, namespace: shop}}\nspec:\n  hosts: web\n");
    let s = snap(&[("mixed.yaml", &text)]);
    assert_eq!(s.services.len(), 3);
    assert_eq!(s.rejected.len(), 1);
    // The document starts on the line after the `---` that follows the fixture.
    let line = MESH.lines().count() + 2;
    let want = format!("mixed.yaml:{line}: VirtualService/shop/typo: field spec.hosts: invalid type: string \"web\", expected a sequence");
    assert_eq!(s.rejected[0].errors, [want]);
}

#[test]
fn cached_compile_equals_full_compile_across_changes() {
    let settings = Arc::new(Settings::default());
    let mut st = store(&[("mesh.yaml", MESH), ("istio.yaml", ISTIO)]);
    let mut cache = mesh_agent::compile::CompileCache::default();
    let services = |s: &Snapshot| {
        serde_json::to_string(&s.services.values().map(|x| &**x).collect::<Vec<_>>()).unwrap()
    };
    let first = mesh_agent::compile::compile_cached(&st, &settings, 1, &mut cache);
    assert_eq!(services(&first), services(&compile(&st, &settings, 1)));
    // Change a pod (labels, readiness), an EndpointSlice, and a Service, one at a time.
    let edits = [
        MESH.replace(
            "podIP: 10.2.0.8\n  conditions: [{type: Ready, status: \"False\"}]",
            "podIP: 10.2.0.8\n  conditions: [{type: Ready, status: \"True\"}]",
        ),
        MESH.replace("addresses: [10.1.0.6]", "addresses: [10.1.0.60]"),
        MESH.replace(
            "labels: {app: web, version: v1,",
            "labels: {app: web, version: v9,",
        ),
        MESH.replace(
            "- {name: tcp-db, port: 5432}",
            "- {name: tcp-db, port: 5433}",
        ),
    ];
    for (i, text) in edits.iter().enumerate() {
        assert_ne!(text, MESH, "edit {i} must change the fixture");
        let (objs, _) = parse_yaml(text);
        st.apply(SourceEvent::Replace {
            origin: "mesh.yaml".into(),
            objects: objs.into_iter().map(|(_, o)| o).collect(),
            errors: vec![],
        });
        let cached = mesh_agent::compile::compile_cached(&st, &settings, 2 + i as u64, &mut cache);
        let full = compile(&st, &settings, 2 + i as u64);
        assert_eq!(services(&cached), services(&full), "edit {i}");
        assert_ne!(services(&cached), services(&first), "edit {i} is visible");
    }
}

#[test]
fn member_scope_drops_other_namespaces_and_their_proxies_get_nothing() {
    // OpenShift Service Mesh multitenancy: only shop (and the root namespace) is a member.
    let settings = Arc::new(Settings {
        visibility: Visibility::Mesh,
        members: Some(Arc::new(
            ["shop".to_string(), "istio-system".to_string()].into(),
        )),
        ..Settings::default()
    });
    let s = compile(
        &store(&[("mesh.yaml", MESH), ("istio.yaml", ISTIO)]),
        &settings,
        9,
    );
    assert!(
        !s.services.keys().any(|h| h.contains(".inventory.")),
        "{:?}",
        s.services.keys().collect::<Vec<_>>()
    );
    assert!(s.services.contains_key("web.shop.svc.cluster.local"));
    assert!(s.pods.keys().all(|(ns, _)| ns != "inventory"));
    let shop = view::build(&s, &proxy("shop", "web-1", &[]));
    assert!(shop
        .services
        .iter()
        .any(|x| x.hostname == "web.shop.svc.cluster.local"));
    let inv = view::build(&s, &proxy("inventory", "stock-1", &[("app", "stock")]));
    assert!(inv.services.is_empty() && inv.virtual_services.is_empty());
}
