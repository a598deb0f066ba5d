use super::*;

#[test]
fn host_rank_prefers_exact_then_longest_suffix_then_star() {
    assert_eq!(host_rank("a.example.com", "A.example.com"), Some(usize::MAX));
    assert_eq!(host_rank("*.example.com", "a.example.com"), Some(12));
    assert_eq!(host_rank("*.example.com", "example.com"), None);
    assert_eq!(host_rank("*", ""), Some(0));
    assert_eq!(host_rank("a.example.com", ""), None);
    let servers = [
        vec!["*".to_string()],
        vec!["*.example.com".to_string()],
        vec!["*.b.example.com".to_string()],
        vec!["x.b.example.com".to_string()],
    ];
    let p = |h: &str| {
        pick(servers.iter(), |s| s.as_slice(), h)
            .map(|s| s[0].clone())
            .unwrap()
    };
    assert_eq!(p("x.b.example.com"), "x.b.example.com");
    assert_eq!(p("y.b.example.com"), "*.b.example.com");
    assert_eq!(p("c.example.com"), "*.example.com");
    assert_eq!(p("other.org"), "*");
}

fn view(servers: Vec<GatewayServer>, vss: &[(&str, &str)]) -> GatewayView {
    GatewayView {
        listeners: vec![mesh_api::gatewayview::GatewayListener {
            port: 8443,
            service_port: 443,
            servers,
        }],
        virtual_services: vss
            .iter()
            .map(|(k, y)| (k.to_string(), serde_yaml_ng::from_str(y).unwrap()))
            .collect(),
        warnings: vec![],
    }
}

fn srv(hosts: &[&str], vss: &[&str]) -> GatewayServer {
    GatewayServer {
        gateway: "istio-system/gw".into(),
        protocol: "HTTP".into(),
        port_name: "http".into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        virtual_services: vss.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn requests_pick_the_server_then_the_virtual_service_by_host() {
    let mut redirect = srv(&["*.secure.example.com"], &[]);
    redirect.https_redirect = true;
    let v = view(
        vec![srv(&["*.example.com"], &["ns/wild", "ns/exact"]), redirect],
        &[
            ("ns/wild", "hosts: ['*.example.com']\nhttp: [{route: [{destination: {host: a}}]}]"),
            ("ns/exact", "hosts: [x.example.com]\nhttp: [{route: [{destination: {host: b}}]}]"),
        ],
    );
    let t = GatewayTable::compile(&v, "cluster.local");
    assert!(t.errors.is_empty() && t.warnings.is_empty(), "{:?} {:?}", t.errors, t.warnings);
    let servers = &t.ports[&8443].servers;
    let vs_of = |host: &str| match http::decide(servers, None, host, "/p?q") {
        http::Decision::Routes(_, b) => b.vs.clone(),
        http::Decision::Redirect(l) => l,
        http::Decision::NoRoute => "none".into(),
    };
    assert_eq!(vs_of("x.example.com"), "ns/exact");
    assert_eq!(vs_of("y.example.com"), "ns/wild");
    assert_eq!(vs_of("shop.secure.example.com"), "https://shop.secure.example.com/p?q");
    assert_eq!(vs_of("other.org"), "none");
    // Pinned by SNI: a host outside the server's hosts is not routed.
    let pinned = &servers[0];
    assert!(matches!(
        http::decide(servers, Some(pinned), "other.org", "/"),
        http::Decision::NoRoute
    ));
    assert_eq!(http::host_of("X.Example.com:8080"), "x.example.com");
    assert_eq!(http::host_of("[::1]:80"), "[::1]");
}

#[test]
fn a_bad_virtual_service_refuses_the_view_and_bad_tls_disables_one_server() {
    let v = view(
        vec![srv(&["*"], &["ns/bad"])],
        &[("ns/bad", "hosts: ['*']\nhttp: [{match: [{uri: {regex: '('}}], route: [{destination: {host: a}}]}]")],
    );
    let t = GatewayTable::compile(&v, "cluster.local");
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
    assert!(t.errors[0].1.path.contains("http[0].match[0].uri"), "{:?}", t.errors);

    let mut broken = srv(&["a.example.com"], &[]);
    broken.protocol = "HTTPS".into();
    broken.tls = Some(GatewayTls {
        mode: "SIMPLE".into(),
        credential: Some(mesh_api::gatewayview::TlsCredential {
            source: "istio-system/a".into(),
            cert_chain: "not a pem".into(),
            private_key: "-----BEGIN PRIVATE KEY-----\nSECRETBYTES\n-----END PRIVATE KEY-----\n".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let t = GatewayTable::compile(&view(vec![broken, srv(&["*"], &[])], &[]), "cluster.local");
    let servers = &t.ports[&8443].servers;
    assert!(matches!(servers[0].tls, ServerTls::Broken(_)));
    assert!(matches!(servers[1].tls, ServerTls::Plain));
    let w = t.warnings.join("\n");
    assert!(w.contains("https.443.http.gw.istio-system") && w.contains("istio-system/a"), "{w}");
    assert!(!w.contains("SECRETBYTES"), "{w}");
}

use mesh_api::gatewayview::GatewayTls;
use mesh_e2e::testca::TestCa;

fn simple(leaf: &mesh_e2e::testca::Leaf) -> GatewayTls {
    GatewayTls {
        mode: "SIMPLE".into(),
        credential: Some(mesh_api::gatewayview::TlsCredential {
            source: "ns/cred".into(),
            cert_chain: leaf.cert_pem.clone(),
            private_key: leaf.key_pem.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn tls_settings_are_checked_when_the_view_is_applied() {
    let ca = TestCa::new("ca", None);
    let leaf = ca.leaf("a", &["a.example.com"], false);
    let other = ca.leaf("b", &["b.example.com"], false);
    let mut w = Vec::new();
    let ok = tls::terminate(&simple(&leaf), &[b"h2"], &mut w).unwrap();
    assert_eq!(ok.cert.sans, vec!["a.example.com".to_string()]);
    assert_eq!(ok.cert.source, "ns/cred");

    let mut mismatch = simple(&leaf);
    mismatch.credential.as_mut().unwrap().private_key = other.key_pem.clone();
    let e = tls::terminate(&mismatch, &[], &mut w).unwrap_err();
    assert!(matches!(e, tls::TlsError::Config { .. }), "{e}");

    let mut old = simple(&leaf);
    old.max_protocol_version = Some("TLSV1_1".into());
    assert_eq!(
        tls::terminate(&old, &[], &mut w).unwrap_err().to_string(),
        "maxProtocolVersion TLSV1_1: this proxy serves TLS 1.2 and 1.3 only"
    );
    let mut low_min = simple(&leaf);
    low_min.min_protocol_version = Some("TLSV1_0".into());
    tls::terminate(&low_min, &[], &mut w).unwrap();
    assert!(w.iter().any(|l| l.contains("TLSV1_0")), "{w:?}");

    let mut mutual = simple(&leaf);
    mutual.mode = "MUTUAL".into();
    assert!(matches!(
        tls::terminate(&mutual, &[], &mut w).unwrap_err(),
        tls::TlsError::NoCa { .. }
    ));

    let mut ciphers = simple(&leaf);
    ciphers.cipher_suites = vec!["AES128-SHA".into()];
    assert!(matches!(
        tls::terminate(&ciphers, &[], &mut w).unwrap_err(),
        tls::TlsError::Ciphers(_)
    ));
    ciphers.cipher_suites = vec!["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]".into()];
    tls::terminate(&ciphers, &[], &mut w).unwrap();
}

#[test]
fn auto_passthrough_sni_and_listener_plan() {
    assert_eq!(
        conn::parse_auto_sni("outbound_.9080_.v1_.reviews.default.svc.cluster.local"),
        Some((9080, Some("v1"), "reviews.default.svc.cluster.local"))
    );
    assert_eq!(
        conn::parse_auto_sni("outbound_.80_._.web.ns.svc.cluster.local"),
        Some((80, None, "web.ns.svc.cluster.local"))
    );
    assert_eq!(conn::parse_auto_sni("web.example.com"), None);
    let set = |v: &[u16]| v.iter().copied().collect::<std::collections::BTreeSet<u16>>();
    assert_eq!(
        listeners::plan(&set(&[80, 443]), &set(&[443, 8443])),
        (vec![8443], vec![80])
    );
}

#[test]
fn per_match_gateways_restrict_a_match_to_that_gateway() {
    let (routes, _) = crate::route::RouteTable::compile_vs(
        "ns/vs",
        &serde_yaml_ng::from_str(
            "hosts: ['*']\nhttp: [{match: [{gateways: [istio-system/gw]}], route: [{destination: {host: a}}]}]",
        )
        .unwrap(),
        "cluster.local",
    )
    .unwrap();
    let h = ::http::HeaderMap::new();
    let labels = Default::default();
    let facts = |gateway| crate::route::Facts {
        method: "GET",
        path: "/",
        query: "",
        scheme: "http",
        authority: "x",
        headers: &h,
        port: 80,
        source_labels: &labels,
        source_namespace: "ns",
        gateway,
    };
    assert!(crate::route::select(&routes, &facts(Some("istio-system/gw"))).is_some());
    assert!(crate::route::select(&routes, &facts(Some("istio-system/other"))).is_none());
    assert!(crate::route::select(&routes, &facts(None)).is_none());
}
