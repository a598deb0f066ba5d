//! Which variants each scenario runs on, and the load target (port, protocol,
//! authority, TLS) each variant gets.

use super::*;

fn by_name(name: &str) -> Scenario {
    scenarios(8.0, 3.0, 0.5, 1000.0)
        .into_iter()
        .find(|s| s.name == name)
        .expect("scenario")
}

#[test]
fn ingress_scenarios_run_on_the_gateways_and_direct_only() {
    let ingress = by_name(INGRESS_HTTPS);
    let headline = by_name(HEADLINE);
    let on = |sc: &Scenario| -> Vec<&str> {
        Variant::ALL
            .into_iter()
            .filter(|v| sc.runs_on(*v))
            .map(|v| v.name())
            .collect()
    };
    assert_eq!(
        on(&ingress),
        ["direct", "envoy-gateway", "mesh-proxy-gateway"]
    );
    assert_eq!(
        on(&headline),
        [
            "direct",
            "envoy",
            "mesh-proxy",
            "envoy-mtls",
            "mesh-proxy-mtls",
            "mesh-proxy-tracing-1",
            "mesh-proxy-tracing-100"
        ]
    );
    assert_eq!((ingress.rate, ingress.duration_s), (Some(1000.0), 8.0));
}

#[test]
fn gateways_get_the_gateway_ports_and_direct_the_plain_app() {
    let https = by_name(INGRESS_HTTPS);
    let http = by_name(INGRESS_HTTP);
    let t = load_target(&https, Variant::MeshProxyGateway);
    assert_eq!(
        t,
        LoadTarget {
            port: 8443,
            mode: Mode::Https1,
            authority: Some("bench.example.com"),
            tls: true
        }
    );
    let t = load_target(&http, Variant::EnvoyGateway);
    assert_eq!((t.port, t.mode, t.tls), (8080, Mode::Http1, false));
    assert_eq!(t.authority, Some("bench.example.com"));
    let t = load_target(&https, Variant::Direct);
    assert_eq!(
        t,
        LoadTarget {
            port: 8080,
            mode: Mode::Http1,
            authority: None,
            tls: false
        }
    );
    let t = load_target(&by_name("h2c-1kb-1000rps"), Variant::MeshProxy);
    assert_eq!((t.port, t.mode), (8081, Mode::H2c));
}
