//! Medians, goal verdicts, and the ingress gateways' ratios and Markdown section.

use super::*;

#[test]
fn median_of_odd_and_even() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(median(vec![]).is_nan());
}

#[test]
fn goals_say_met_or_missed() {
    assert_eq!(goal_le(Some(0.3), 0.4), "≤ 0.4×: met");
    assert_eq!(goal_le(Some(0.5), 0.4), "≤ 0.4×: **missed**");
    assert_eq!(goal_ge(Some(1.5), 2.0), "≥ 2×: **missed**");
}

fn summary(scenario: &str, v: Variant, p99_us: f64, cpu: Option<f64>) -> Summary {
    Summary {
        scenario: scenario.into(),
        variant: Some(v),
        runs: 1,
        rps: 1000.0,
        latency_us: [100.0, 150.0, p99_us, p99_us * 2.0],
        cpu_s_per_1000: cpu,
        ..Default::default()
    }
}

fn run(scenario: &str, v: Variant, p99_us: f64) -> crate::run::RunRecord {
    crate::run::RunRecord {
        rep: 1,
        scenario: scenario.into(),
        variant: v,
        mtls: crate::run::Mtls::Off,
        load: crate::load::LoadResult {
            ok: 1000,
            rps: 1000.0,
            latency_us: crate::load::Percentiles {
                p50: 100.0,
                p99: p99_us,
                ..Default::default()
            },
            ..Default::default()
        },
        sidecars: None,
        spans: None,
    }
}

#[test]
fn ingress_ratios_divide_the_added_p99_and_cpu_of_the_gateways() {
    // Added p99 over direct: Envoy 1000 µs, mesh-proxy 400 µs → 0.4.
    let raw = Raw {
        runs: vec![
            run(INGRESS_HTTPS, Variant::Direct, 200.0),
            run(INGRESS_HTTPS, Variant::EnvoyGateway, 1200.0),
            run(INGRESS_HTTPS, Variant::MeshProxyGateway, 600.0),
        ],
        ..Default::default()
    };
    let mut sums = summarize(&raw);
    for s in &mut sums {
        s.cpu_s_per_1000 = match s.variant {
            Some(Variant::EnvoyGateway) => Some(0.5),
            Some(Variant::MeshProxyGateway) => Some(0.3),
            _ => None,
        };
    }
    let r = ingress_ratios(&sums);
    assert_eq!(r.len(), 1, "only the scenario that ran: {r:?}");
    assert_eq!(r[0].scenario, INGRESS_HTTPS);
    assert!((r[0].added_p99.unwrap() - 0.4).abs() < 1e-9, "{r:?}");
    assert!((r[0].cpu_per_1000.unwrap() - 0.6).abs() < 1e-9, "{r:?}");
    let md = markdown(&sums, "", "");
    assert!(
        md.contains("## Ingress: HTTPS terminated at the gateway"),
        "{md}"
    );
    assert!(
        md.contains("| added p99 | – | 1.000 ms | 0.400 ms | 0.40 | ≤ 0.5×: met |"),
        "{md}"
    );
    assert!(
        md.contains("| CPU s / 1000 req (gateway + server sidecar) | – | 0.5000 | 0.3000 | 0.60 | ≤ 0.5×: **missed** |"),
        "{md}"
    );
    assert!(!md.contains("## Headline"), "no sidecar variant ran: {md}");
}

#[test]
fn no_ingress_section_without_a_gateway_run() {
    let sums = vec![
        summary(HEADLINE, Variant::Direct, 100.0, None),
        summary(INGRESS_HTTP, Variant::Direct, 100.0, None),
    ];
    assert!(ingress_ratios(&sums).is_empty());
    assert!(!markdown(&sums, "", "").contains("## Ingress"));
}
