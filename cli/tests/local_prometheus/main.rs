//! Bookinfo on `meshctl local` scraped by a real Prometheus (Debian's
//! `prometheus`), which then answers the queries Kiali's graph and Istio's
//! Grafana dashboards ask. Prometheus runs in the mesh's node namespace, where a
//! cluster's Prometheus pod would be: it reaches every pod IP on the bridge and
//! the agent's monitoring port. Its targets are the Pod objects the mesh holds,
//! kept or dropped, and pointed at a path and port, by their `prometheus.io/*`
//! annotations with the relabelling of Istio's Prometheus sample; the agent is
//! scraped as `istiod` is.
//!
//! This file holds the test, its setup and the traffic, and calls the phases
//! in order: `kiali.rs` (Kiali's graph queries), then `dashboards.rs`
//! (Grafana's panels and `meshctl local dashboard`). Both build on the leaf
//! modules `series.rs` (query answers), `bookinfo.rs` (pods, URLs, traffic)
//! and `prometheus.rs` (the process), which import no phase file.

#[path = "../common/mod.rs"]
mod common;
#[path = "../procs/mod.rs"]
mod procs;

mod bookinfo;
mod dashboards;
mod kiali;
mod prometheus;
mod series;

use bookinfo::{edges, traffic, PRODUCTPAGE, RATINGS_TCP, REVIEWS_URL, REVIEWS_V2};
use common::{netns_left, sample, Local};
use prometheus::Prometheus;
use series::{find, has};
use std::time::Instant;

#[test]
fn kiali_and_dashboard_queries_on_bookinfo() {
    let started = Instant::now();
    let mesh = Local::up(&[
        "-f",
        &sample("platform"),
        "-f",
        &sample("networking/destination-rule-all.yaml"),
    ]);
    let tcp_svc = mesh.file("ratings-tcp.yaml", RATINGS_TCP);
    mesh.apply(&tcp_svc, &[REVIEWS_V2]);
    mesh.apply(
        &sample("networking/virtual-service-ratings-test-abort.yaml"),
        &[REVIEWS_V2],
    );
    let prom = Prometheus::start(&mesh);

    // Every sidecar's 15020 and the agent are scraped; productpage's own
    // annotations (port 9080, /metrics) moved to its proxy, which serves the
    // app's metrics after its own.
    let up = prom.until("up", |r| {
        find(r, &[("job", "kubernetes-pods")])
            .iter()
            .filter(|s| s.1 == 1.0)
            .count()
            == 6
            && has(r, &[("job", "istiod")], 1.0)
    });
    for (l, _) in find(&up, &[("job", "kubernetes-pods")]) {
        assert!(l["instance"].ends_with(":15020"), "{l:?}");
    }
    prom.until(r#"mesh_echo_requests_total{pod="productpage-v1-0"}"#, |r| {
        r.len() == 1
    });

    // Rates need two samples of a series: one call on each edge makes the
    // series, the rest (after Prometheus has seen them) make the rates.
    edges(&mesh, 1);
    prom.until(
        r#"sum(istio_requests_total{reporter="source"}) by (destination_service_name, response_code)"#,
        |r| {
            has(r, &[("destination_service_name", "details")], 1.0)
                && has(r, &[("destination_service_name", "reviews")], 1.0)
                && has(r, &[("destination_service_name", "ratings"), ("response_code", "500")], 1.0)
        },
    );
    prom.until(
        r#"sum(istio_tcp_connections_opened_total) by (destination_service_name)"#,
        |r| has(r, &[("destination_service_name", "ratings-tcp")], 1.0),
    );
    // reviews has three versions behind one Service and the sidecar picks
    // among them at random: every version's series must be in Prometheus
    // before the rate phase, or all of that phase's calls may land on
    // versions first seen after them (a series' first sample gives no rate;
    // (2/3)^10 of the time with one version seen).
    let by_version = r#"sum(istio_requests_total{reporter="source",destination_service_name="reviews"}) by (destination_workload)"#;
    let mut more_reviews = 0.0;
    for round in 0.. {
        let seen = prom.query(by_version);
        if seen.len() == 3 {
            break;
        }
        assert!(
            round < 20,
            "reviews versions after {round} rounds: {seen:?}"
        );
        let before: f64 = seen.iter().map(|s| s.1).sum();
        traffic(&mesh, PRODUCTPAGE, REVIEWS_URL, 3, &[], 200);
        more_reviews += 3.0;
        prom.until(by_version, |r| {
            r.iter().map(|s| s.1).sum::<f64>() >= before + 3.0
        });
    }
    let n = 10;
    edges(&mesh, n);
    let total = (n + 1) as f64;

    kiali::source_graph(&prom);
    kiali::destination_security(&prom);
    kiali::exact_counts(&prom, total, more_reviews);
    kiali::tcp(&prom, total);
    dashboards::workload(&prom, total);
    dashboards::mesh_and_control_plane(&prom);
    dashboards::meshctl_dashboard(&mesh);

    // Prometheus goes first (it lives in the node namespace), then the mesh.
    let (name, pid) = (mesh.name.clone(), prom.process.0.id());
    drop(prom);
    drop(mesh);
    assert!(netns_left(&format!("ml-{name}-")).is_empty());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    eprintln!("local_prometheus: {:?}", started.elapsed());
}
