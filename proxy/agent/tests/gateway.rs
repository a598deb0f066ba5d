//! Gateway views compiled from snapshots: which Gateways select a router, ports
//! through the gateway Service, server order, `ns/host` scoping, VirtualService
//! binding (names, per-match gateways, exportTo, route kinds), the services a
//! gateway gets, and sidecars left untouched. Credentials: tests/gateway_tls.rs.

mod common;

use common::store;
use mesh_agent::compile::{compile, Settings, Snapshot};
use mesh_agent::view;
use mesh_api::syncapi::{GatewayServer, GatewayView, ProxyIdentity, ProxyView};
use std::sync::Arc;

const GATEWAY: &str = include_str!("fixtures/gateway.yaml");

fn snap_with(settings: Settings, files: &[(&str, &str)]) -> Snapshot {
    compile(&store(files), &Arc::new(settings), 3)
}

fn snap() -> Snapshot {
    let s = snap_with(Settings::default(), &[("gateway.yaml", GATEWAY)]);
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    s
}

pub fn router(ns: &str, labels: &[(&str, &str)]) -> ProxyIdentity {
    ProxyIdentity {
        pod: "gw-1".into(),
        namespace: ns.into(),
        service_account: "istio-ingressgateway".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: vec![],
        router: true,
    }
}

fn ingress(ns: &str) -> ProxyIdentity {
    router(
        ns,
        &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
    )
}

fn gw(v: &ProxyView) -> &GatewayView {
    v.gateway.as_ref().expect("a router gets a gateway view")
}

fn servers(v: &GatewayView) -> Vec<&GatewayServer> {
    v.listeners.iter().flat_map(|l| &l.servers).collect()
}

fn server<'v>(v: &'v GatewayView, gateway: &str, index: usize) -> &'v GatewayServer {
    servers(v)
        .into_iter()
        .find(|s| s.gateway == gateway && s.index == index)
        .unwrap_or_else(|| panic!("no {gateway} servers[{index}] in {v:#?}"))
}

#[test]
fn routers_get_the_gateways_selecting_them_sidecars_none() {
    let s = snap();
    let v = view::build(&s, &ingress("istio-system"));
    let gws: std::collections::BTreeSet<&str> =
        servers(gw(&v)).iter().map(|s| s.gateway.as_str()).collect();
    assert_eq!(
        gws.into_iter().collect::<Vec<_>>(),
        ["bookinfo/zz-early", "istio-system/gw"]
    );
    assert!(v.virtual_services.is_empty(), "mesh routes stay out");

    let egress = view::build(&s, &router("istio-system", &[("istio", "egressgateway")]));
    assert_eq!(servers(gw(&egress)).len(), 2);
    assert!(servers(gw(&egress))
        .iter()
        .all(|s| s.gateway == "istio-system/egress"));

    let nothing = view::build(&s, &router("istio-system", &[("app", "other")]));
    assert_eq!(gw(&nothing).listeners, vec![]);

    let mut sidecar = ingress("istio-system");
    sidecar.router = false;
    let sv = view::build(&s, &sidecar);
    assert_eq!(sv.gateway, None);
    // The sidecar's view is the one it had before gateways existed.
    let no_gw = GATEWAY.replace("kind: Gateway", "kind: NotAGateway");
    let before = snap_with(Settings::default(), &[("gateway.yaml", &no_gw)]);
    assert_eq!(sv.services, view::build(&before, &sidecar).services);
    // Router and sidecar views are cached apart, and routers apart by labels.
    assert_ne!(
        view::key(&s, &sidecar),
        view::key(&s, &ingress("istio-system"))
    );
    assert_ne!(
        view::key(&s, &ingress("istio-system")),
        view::key(&s, &router("istio-system", &[("istio", "egressgateway")]))
    );
}

#[test]
fn scope_gateway_to_namespace_keeps_only_the_pods_namespace() {
    let settings = Settings {
        scope_gateway_to_namespace: true,
        ..Settings::default()
    };
    let s = snap_with(settings, &[("gateway.yaml", GATEWAY)]);
    let v = view::build(&s, &ingress("istio-system"));
    assert!(servers(gw(&v))
        .iter()
        .all(|s| s.gateway == "istio-system/gw"));
    assert_eq!(servers(gw(&v)).len(), 5);
    let b = view::build(&s, &ingress("bookinfo"));
    assert_eq!(servers(gw(&b)).len(), 1);
    assert_eq!(servers(gw(&b))[0].gateway, "bookinfo/zz-early");
}

#[test]
fn ports_go_through_the_gateway_service_and_servers_keep_istios_order() {
    let s = snap();
    let v = view::build(&s, &ingress("istio-system"));
    let ports: Vec<(u16, u16)> = gw(&v)
        .listeners
        .iter()
        .map(|l| (l.port, l.service_port))
        .collect();
    assert_eq!(ports, [(8080, 80), (8443, 443), (9000, 9000), (9443, 9443)]);
    let order = |p: u16| -> Vec<(String, usize)> {
        gw(&v)
            .listeners
            .iter()
            .find(|l| l.port == p)
            .unwrap()
            .servers
            .iter()
            .map(|s| (s.gateway.clone(), s.index))
            .collect()
    };
    // zz-early was created first: its server leads despite its name.
    assert_eq!(
        order(8080),
        [
            ("bookinfo/zz-early".to_string(), 0),
            ("istio-system/gw".to_string(), 0)
        ]
    );
    assert_eq!(
        order(8443),
        [
            ("istio-system/gw".to_string(), 1),
            ("istio-system/gw".to_string(), 2)
        ]
    );
    // In `edge` the edge Service maps 80 → 7777; 443 has no Service port there.
    let e = view::build(&s, &ingress("edge"));
    let ports: Vec<u16> = gw(&e).listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [443, 7777, 9000, 9443]);
}

#[test]
fn servers_carry_hosts_without_namespace_and_their_tls_settings() {
    let s = snap();
    let v = view::build(&s, &ingress("istio-system"));
    let g = gw(&v);
    let http = server(g, "istio-system/gw", 0);
    assert!(http.https_redirect);
    assert_eq!(http.protocol, "HTTP");
    assert_eq!(http.tls, None, "httpsRedirect alone is no TLS");
    assert_eq!(
        server(g, "istio-system/gw", 1).hosts,
        ["bookinfo.example.com"]
    );
    let shop = server(g, "istio-system/gw", 2);
    assert_eq!(shop.hosts, ["*.shop.example.com"]);
    assert_eq!(shop.port_name, "https-shop");
    let t = shop.tls.as_ref().unwrap();
    assert_eq!(t.mode, "SIMPLE", "Istio's default mode");
    assert_eq!(t.min_protocol_version.as_deref(), Some("TLSV1_2"));
    assert_eq!(t.max_protocol_version.as_deref(), Some("TLSV1_3"));
    assert_eq!(t.cipher_suites, ["ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert_eq!(server(g, "istio-system/gw", 3).hosts, ["*"]);
    assert_eq!(server(g, "istio-system/gw", 3).protocol, "TCP");

    let e = view::build(&s, &router("istio-system", &[("istio", "egressgateway")]));
    let files = server(gw(&e), "istio-system/egress", 1)
        .tls
        .as_ref()
        .unwrap();
    assert_eq!(files.mode, "MUTUAL");
    assert_eq!(files.subject_alt_names, ["client.example.com"]);
    let f = files.files.as_ref().unwrap();
    assert_eq!(
        (
            f.server_certificate.as_str(),
            f.private_key.as_str(),
            f.ca_certificates.as_deref()
        ),
        (
            "/etc/certs/cert.pem",
            "/etc/certs/key.pem",
            Some("/etc/certs/ca.pem")
        )
    );
    assert_eq!(
        (files.credential.as_ref(), files.error.as_ref()),
        (None, None)
    );
}

#[test]
fn virtual_services_bind_by_name_host_namespace_export_and_route_kind() {
    let s = snap();
    let v = view::build(&s, &ingress("istio-system"));
    let g = gw(&v);
    let bound = |i: usize| server(g, "istio-system/gw", i).virtual_services.clone();
    // Port 80 `*`: every exported VS naming gw with http routes, oldest first
    // (no creationTimestamp sorts first, then by name).
    assert_eq!(
        bound(0),
        [
            "istio-system/shop",
            "bookinfo/shop-intruder",
            "bookinfo/bookinfo",
            "bookinfo/reviews-edge"
        ]
    );
    // `bookinfo/` admits only VirtualServices of bookinfo.
    assert_eq!(bound(1), ["bookinfo/bookinfo", "bookinfo/reviews-edge"]);
    // `./` admits only the Gateway's namespace.
    assert_eq!(bound(2), ["istio-system/shop"]);
    // TCP server: tcp routes; PASSTHROUGH server: tls routes.
    assert_eq!(bound(3), ["prod/db"]);
    assert_eq!(bound(4), ["prod/secure"]);
    // zz-early's host intersects nothing bound to it.
    assert!(server(g, "bookinfo/zz-early", 0)
        .virtual_services
        .is_empty());

    // Names rewritten in full, per match too; `mesh` stays.
    let bi = &g.virtual_services["bookinfo/bookinfo"];
    assert_eq!(bi.gateways, ["istio-system/gw", "bookinfo/zz-early"]);
    let re = &g.virtual_services["bookinfo/reviews-edge"];
    assert_eq!(re.http[0].match_[0].gateways, ["istio-system/gw"]);
    assert_eq!(re.http[0].match_[1].gateways, ["mesh"]);
    let shop = &g.virtual_services["istio-system/shop"];
    assert_eq!(shop.gateways, ["istio-system/gw"]);
    for absent in ["bookinfo/mesh-only", "bookinfo/private"] {
        assert!(!g.virtual_services.contains_key(absent), "{absent} bound");
    }

    // Exported to the gateway pod's namespace: `private` binds for a gateway
    // pod running in bookinfo.
    let b = view::build(&s, &ingress("bookinfo"));
    assert!(server(gw(&b), "istio-system/gw", 0)
        .virtual_services
        .contains(&"bookinfo/private".to_string()));
}

#[test]
fn a_gateway_gets_the_destinations_of_its_routes_and_their_rules() {
    let s = snap();
    let v = view::build(&s, &ingress("istio-system"));
    let hosts: Vec<&str> = v.services.iter().map(|s| s.hostname.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "db.prod.svc.cluster.local",
            "productpage.bookinfo.svc.cluster.local",
            "ratings.bookinfo.svc.cluster.local",
            "reviews.bookinfo.svc.cluster.local",
            "secure.prod.svc.cluster.local",
            "shop.istio-system.svc.cluster.local",
        ]
    );
    assert_eq!(
        v.destination_rules.keys().collect::<Vec<_>>(),
        ["productpage.bookinfo.svc.cluster.local"]
    );
    // AUTO_PASSTHROUGH: every service visible to the pod's namespace.
    let e = view::build(&s, &router("istio-system", &[("istio", "egressgateway")]));
    assert_eq!(e.services.len(), s.services.len());
    assert!(server(gw(&e), "istio-system/egress", 0)
        .virtual_services
        .is_empty());
}
