//! The dashboards' queries, each phase a function of the one test: Istio's
//! Grafana workload, mesh and control-plane panels, then `meshctl local
//! dashboard --prometheus` drawing the graph from the same Prometheus. Kept
//! apart from Kiali's queries, which check labels rather than panels.

use crate::common::page::{self, attr, edge, num};
use crate::common::Local;
use crate::procs;
use crate::prometheus::{Prometheus, PROM};
use crate::series::{assert_labels, find, has};
use std::time::Duration;

pub fn workload(prom: &Prometheus, total: f64) {
    // The workload dashboard's latency and size panels.
    let q = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="source"}[1m])) by (le, destination_workload))"#;
    let r = prom.query(q);
    for w in ["details-v1", "ratings-v1"] {
        let v = find(&r, &[("destination_workload", w)]);
        assert!(
            v.len() == 1 && v[0].1.is_finite() && v[0].1 > 0.0,
            "{w}: {r:#?}"
        );
    }
    for m in ["istio_request_bytes", "istio_response_bytes"] {
        let q = format!(
            r#"histogram_quantile(0.5, sum(rate({m}_bucket{{reporter="destination",destination_workload="details-v1"}}[1m])) by (le))"#
        );
        let r = prom.query(&q);
        assert!(r.len() == 1 && r[0].1.is_finite(), "{q}: {r:#?}");
        let q = format!(
            r#"sum({m}_count{{reporter="destination",destination_workload="details-v1"}})"#
        );
        prom.until(&q, |r| r.first().map(|s| s.1) == Some(total));
    }
    // Every answer of details had a body: the first bucket (up to 1 byte)
    // holds none of them.
    let r = prom.query(
        r#"sum(istio_response_bytes_bucket{reporter="destination",destination_workload="details-v1",le="1"})"#,
    );
    assert_eq!(r[0].1, 0.0, "{r:#?}");
}

pub fn mesh_and_control_plane(prom: &Prometheus) {
    // The mesh dashboard's component versions: six sidecars and the agent.
    let r = prom.query("sum(istio_build) by (component, tag)");
    assert!(has(&r, &[("component", "proxy")], 6.0), "{r:#?}");
    assert!(has(&r, &[("component", "pilot")], 1.0), "{r:#?}");
    assert_labels(&r, &["tag"], "istio_build");

    // The control-plane dashboard.
    let r = prom.query("sum(pilot_xds)");
    assert_eq!(
        r.first().map(|s| s.1),
        Some(6.0),
        "connected proxies: {r:#?}"
    );
    let r = prom.until("sum(irate(pilot_xds_pushes[1m])) by (type)", |r| {
        !r.is_empty()
    });
    assert_labels(&r, &["type"], "pilot_xds_pushes");
    let r = prom.query("sum(pilot_xds_pushes) by (type)");
    assert!(r.iter().map(|s| s.1).sum::<f64>() >= 6.0, "{r:#?}");
    let r = prom.query("sum(rate(pilot_xds_push_time_bucket[1m])) by (le)");
    assert!(r.iter().any(|(l, _)| l["le"] == "+Inf"), "{r:#?}");
    let r = prom.query("sum(pilot_total_xds_rejects) by (type)");
    assert_labels(&r, &["type"], "pilot_total_xds_rejects");
    assert!(!r.is_empty() && r.iter().all(|s| s.1 == 0.0), "{r:#?}");
}

pub fn meshctl_dashboard(mesh: &Local) {
    // `meshctl local dashboard --prometheus`: the same graph from these
    // queries. productpage → reviews over mutual TLS; reviews-v2 → ratings
    // half aborted (500, FI), which shows as its error rate; the TCP edge.
    let prom_url = format!("http://{PROM}");
    let (dash, line) = procs::spawn(&mut page::command(mesh, &["--prometheus", &prom_url]));
    let url = page::url(&line);
    let page = page::until(
        Duration::from_secs(30),
        || page::get(&url),
        |page| {
            let mut miss = Vec::new();
            let pp = "workload:default/productpage-v1";
            let v2 = "workload:default/reviews-v2";
            match edge(page, pp, "service:default/reviews", "http") {
                Some(e)
                    if num(e, "data-rps") > 0.0
                        && attr(e, "data-mtls").as_deref() == Some("true") => {}
                e => miss.push(format!(
                    "productpage -> reviews with a rate and mTLS: {e:?}"
                )),
            }
            match edge(page, v2, "service:default/ratings", "http") {
                Some(e) if (40.0..=60.0).contains(&num(e, "data-error-pct")) => {}
                e => miss.push(format!("reviews-v2 -> ratings with 50 % errors: {e:?}")),
            }
            match edge(page, v2, "service:default/ratings-tcp", "tcp") {
                Some(e) if num(e, "data-rps") > 0.0 => {}
                e => miss.push(format!("reviews-v2 -> ratings-tcp with connections: {e:?}")),
            }
            miss
        },
    );
    assert!(
        page.contains(&format!("metrics: Prometheus at http://{PROM}")),
        "{page}"
    );
    assert!(!page.contains("class=\"problems\""), "{page}");
    drop(dash);
}
