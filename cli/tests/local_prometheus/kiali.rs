//! Kiali's graph queries, each phase a function of the one test: source and
//! destination request telemetry, exact counts and TCP bytes. Kept apart from
//! the dashboards' panels: these check the labels Kiali requires on every
//! series, which a change of the proxy's metrics breaks first.

use crate::bookinfo::NS;
use crate::prometheus::Prometheus;
use crate::series::{assert_labels, find, group, has};

/// Labels Kiali's graph groups `istio_requests_total` by, each of which it
/// requires on a series (it skips series without them); `grpc_response_status`
/// is optional there. From kiali's graph/telemetry/istio/istio.go.
const KIALI_HTTP: [&str; 16] = [
    "source_cluster",
    "source_workload_namespace",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_cluster",
    "destination_service_namespace",
    "destination_service",
    "destination_service_name",
    "destination_workload_namespace",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "response_flags",
];
/// What Kiali's security-policy appender adds to its group (destination telemetry).
const KIALI_SECURITY: [&str; 3] = [
    "source_principal",
    "destination_principal",
    "connection_security_policy",
];

pub fn source_graph(prom: &Prometheus) {
    // Kiali's graph, source telemetry of the namespace's workloads.
    let mut by = KIALI_HTTP.to_vec();
    by.extend(["grpc_response_status", "connection_security_policy"]);
    let q = format!(
        r#"sum(rate(istio_requests_total{{reporter="source",source_workload_namespace="{NS}"}}[1m])) by ({}) > 0"#,
        group(&by)
    );
    let want_edges: [&[(&str, &str)]; 4] = [
        &[
            ("source_workload", "productpage-v1"),
            ("source_canonical_service", "productpage"),
            ("source_canonical_revision", "v1"),
            ("destination_service", "details.default.svc.cluster.local"),
            ("destination_service_name", "details"),
            ("destination_workload", "details-v1"),
            ("destination_canonical_service", "details"),
            ("destination_canonical_revision", "v1"),
            ("request_protocol", "http"),
            ("response_code", "200"),
            ("response_flags", "-"),
        ],
        &[
            ("source_workload", "productpage-v1"),
            ("destination_service_name", "reviews"),
            ("destination_canonical_service", "reviews"),
            ("response_code", "200"),
        ],
        &[
            ("source_workload", "reviews-v2"),
            ("source_canonical_revision", "v2"),
            ("destination_workload", "ratings-v1"),
            ("response_code", "200"),
        ],
        // The abort never reached ratings: no destination workload, Istio's
        // `unknown`, and the fault-injection flag.
        &[
            ("source_workload", "reviews-v2"),
            ("destination_service", "ratings.default.svc.cluster.local"),
            ("destination_service_name", "ratings"),
            ("destination_workload", "unknown"),
            ("response_code", "500"),
            ("response_flags", "FI"),
        ],
    ];
    let r = prom.until(&q, |r| want_edges.iter().all(|w| has(r, w, 0.0)));
    assert_labels(&r, &KIALI_HTTP, "kiali source query");
    for (l, _) in &r {
        assert_eq!(l["source_cluster"], "Kubernetes", "{l:?}");
        assert_eq!(l["destination_cluster"], "Kubernetes", "{l:?}");
    }
}

pub fn destination_security(prom: &Prometheus) {
    // Destination telemetry: mutual TLS with both principals (Kiali's
    // security-policy appender).
    let mut by = KIALI_HTTP.to_vec();
    by.extend(KIALI_SECURITY);
    let q = format!(
        r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{NS}"}}[1m])) by ({}) > 0"#,
        group(&by)
    );
    let r = prom.until(&q, |r| {
        has(r, &[("destination_workload", "details-v1")], 0.0)
            && has(r, &[("destination_workload", "ratings-v1")], 0.0)
    });
    assert_labels(&r, &KIALI_HTTP, "kiali destination query");
    assert_labels(&r, &KIALI_SECURITY, "kiali security query");
    let d = find(&r, &[("destination_workload", "details-v1")]);
    assert_eq!(d.len(), 1, "{r:#?}");
    let d = &d[0].0;
    assert_eq!(d["connection_security_policy"], "mutual_tls", "{d:?}");
    assert_eq!(
        d["source_principal"], "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "{d:?}"
    );
    assert_eq!(
        d["destination_principal"], "spiffe://cluster.local/ns/default/sa/bookinfo-details",
        "{d:?}"
    );
    assert!(
        find(&r, &[("response_flags", "FI")]).is_empty(),
        "an aborted call reached its destination: {r:#?}"
    );
}

pub fn exact_counts(prom: &Prometheus, total: f64, more_reviews: f64) {
    // Exact counts, source and destination agreeing (once the last
    // requests are scraped).
    let want_counts = [
        ("source", "details", "200", total),
        ("destination", "details", "200", total),
        ("source", "reviews", "200", total + more_reviews),
        ("destination", "reviews", "200", total + more_reviews),
        ("source", "ratings", "200", total),
        ("destination", "ratings", "200", total),
        ("source", "ratings", "500", total),
    ];
    prom.until(
        "sum(istio_requests_total) by (reporter, destination_service_name, response_code)",
        |r| {
            want_counts.iter().all(|(reporter, svc, code, want)| {
                let got = find(
                    r,
                    &[
                        ("reporter", reporter),
                        ("destination_service_name", svc),
                        ("response_code", code),
                    ],
                );
                got.iter().map(|(_, v)| v).sum::<f64>() == *want
            })
        },
    );
}

pub fn tcp(prom: &Prometheus, total: f64) {
    // TCP: Kiali's graph asks for sent bytes; the dashboards for connections.
    // Kiali's TCP group: its request group without the per-request labels.
    let tcp_by: Vec<&str> = KIALI_HTTP
        .into_iter()
        .filter(|l| !["request_protocol", "response_code"].contains(l))
        .collect();
    for reporter in ["source", "destination"] {
        let q = format!(
            r#"sum(rate(istio_tcp_sent_bytes_total{{reporter="{reporter}"}}[1m])) by ({}, connection_security_policy, source_principal) > 0"#,
            group(&tcp_by)
        );
        // Each proxy knows itself; the other side by its endpoint (labels,
        // namespace, and for the caller its verified identity): no request
        // carries a workload name over plain TCP.
        let (src, dest): ((&str, &str), (&str, &str)) = if reporter == "source" {
            (
                ("source_workload", "reviews-v2"),
                ("destination_canonical_service", "ratings"),
            )
        } else {
            (
                ("source_canonical_service", "reviews"),
                ("destination_workload", "ratings-v1"),
            )
        };
        let r = prom.until(&q, |r| {
            has(
                r,
                &[
                    src,
                    ("source_canonical_revision", "v2"),
                    ("destination_service_name", "ratings-tcp"),
                    ("destination_workload_namespace", NS),
                    ("destination_canonical_revision", "v1"),
                    dest,
                ],
                0.0,
            )
        });
        assert_labels(&r, &tcp_by, "kiali tcp query");
        if reporter == "destination" {
            let d = find(&r, &[("destination_service_name", "ratings-tcp")]);
            let l = &d[0].0;
            assert_eq!(l["connection_security_policy"], "mutual_tls", "{l:?}");
            assert_eq!(
                l["source_principal"], "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
                "{l:?}"
            );
        }
    }
    // Every connection, on both sides (once the last ones are scraped).
    prom.until(
        r#"sum(istio_tcp_connections_opened_total{destination_service_name="ratings-tcp"}) by (reporter)"#,
        |r| {
            ["source", "destination"]
                .iter()
                .all(|rep| find(r, &[("reporter", rep)]).iter().any(|s| s.1 == total))
        },
    );
}
