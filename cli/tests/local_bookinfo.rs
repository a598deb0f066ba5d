//! Bookinfo on `meshctl local`, with Istio's own sample routing rules: weighted
//! splits within statistical tolerance, header-based routing for `end-user:
//! jason`, fault injection (delay and abort) and mirroring, each checked on the
//! echo app's answers and on the calling proxy's Istio metrics.

mod common;

use common::*;
use std::time::Instant;

const CLIENT: &str = "productpage-v1-0";
const REVIEWS: &str = "http://reviews:9080/reviews/0";

fn bookinfo(mode: &str) -> Local {
    Local::up(&[
        "--mode",
        mode,
        "-f",
        &sample("platform"),
        "-f",
        &sample("networking/destination-rule-all.yaml"),
    ])
}

#[test]
fn bookinfo_weighted_header_and_mirror_routing() {
    let mesh = bookinfo("cni");
    let pods = mesh.ok(&["pods"]);
    assert_eq!(pods.matches("istio-proxy").count(), 6, "{pods}");
    assert_eq!(pods.matches("2/2").count(), 6, "{pods}");

    // Without a VirtualService, reviews is balanced over its three versions.
    let res = mesh.calls(CLIENT, REVIEWS, 300, &[]);
    let v = versions(&res);
    for ver in ["v1", "v2", "v3"] {
        assert_split(v.get(ver).copied().unwrap_or(0), 300, 1.0 / 3.0, ver);
    }
    // Names resolve as in a cluster, in every form.
    for host in [
        "reviews",
        "reviews.default",
        "reviews.default.svc.cluster.local",
    ] {
        let r = mesh.calls(CLIENT, &format!("http://{host}:9080/"), 1, &[]);
        assert_eq!(r[0].0, 200, "{host}");
    }

    // What productpage's sidecar has in force, as `istioctl proxy-config` shows it.
    let clusters = mesh.ok(&[
        "proxy-config",
        "cluster",
        CLIENT,
        "--fqdn",
        "reviews.default.svc.cluster.local",
    ]);
    for subset in ["v1", "v2", "v3"] {
        assert!(
            clusters
                .lines()
                .any(|l| l.contains("reviews.default.svc.cluster.local") && l.contains(subset)),
            "{clusters}"
        );
    }
    let endpoints = mesh.ok(&[
        "proxy-config",
        "endpoint",
        CLIENT,
        "--fqdn",
        "reviews.default.svc.cluster.local",
    ]);
    let healthy = endpoints.lines().filter(|l| l.contains(" HEALTHY")).count();
    assert!(
        healthy >= 3 && !endpoints.contains("UNHEALTHY"),
        "{endpoints}"
    );

    mesh.apply(&sample("networking/virtual-service-all-v1.yaml"), &[CLIENT]);
    let res = mesh.calls(CLIENT, REVIEWS, 100, &[]);
    assert_eq!(versions(&res), [("v1".to_string(), 100)].into(), "all-v1");

    for (file, (a, pa), b, n) in [
        (
            "virtual-service-reviews-80-20.yaml",
            ("v1", 0.8),
            "v2",
            1000,
        ),
        (
            "virtual-service-reviews-90-10.yaml",
            ("v1", 0.9),
            "v2",
            1000,
        ),
        (
            "virtual-service-reviews-50-v3.yaml",
            ("v1", 0.5),
            "v3",
            1000,
        ),
    ] {
        mesh.apply(&sample(&format!("networking/{file}")), &[CLIENT]);
        let before = mesh.metrics(CLIENT);
        let res = mesh.calls(CLIENT, REVIEWS, n, &[]);
        let v = versions(&res);
        let got_a = v.get(a).copied().unwrap_or(0);
        let got_b = v.get(b).copied().unwrap_or(0);
        assert_eq!(got_a + got_b, n, "{file}: {v:?}");
        assert_split(got_a, n, pa, file);
        // The client's proxy counted the same split, labelled as Istio labels it.
        let after = mesh.metrics(CLIENT);
        let count = |m: &str, ver: &str| {
            metric_sum(
                m,
                "istio_requests_total",
                &[
                    "reporter=\"source\"",
                    "destination_service=\"reviews.default.svc.cluster.local\"",
                    &format!("destination_version=\"{ver}\""),
                    "response_code=\"200\"",
                ],
            )
        };
        assert_eq!(
            count(&after, b) - count(&before, b),
            got_b as f64,
            "{file}: metrics"
        );
    }

    // end-user: jason goes to v2, everyone else to v1.
    mesh.apply(
        &sample("networking/virtual-service-reviews-test-v2.yaml"),
        &[CLIENT],
    );
    let jason = mesh.calls(CLIENT, REVIEWS, 50, &["-H", "end-user: jason"]);
    assert_eq!(versions(&jason), [("v2".to_string(), 50)].into());
    let others = mesh.calls(CLIENT, REVIEWS, 50, &["-H", "end-user: someone"]);
    assert_eq!(versions(&others), [("v1".to_string(), 50)].into());
    assert!(jason[0].1.as_ref().unwrap().headers["end-user"] == "jason");

    // Mirroring: v1 answers, v2 gets a copy of every request.
    let mirror = mesh.file(
        "mirror.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n    mirror: {host: reviews, subset: v2}\n    mirrorPercentage: {value: 100.0}\n",
    );
    mesh.apply(&mirror, &[CLIENT]);
    let seen = |log: &str| log.matches("/mirrored?call=").count();
    let res = mesh.calls(CLIENT, "http://reviews:9080/mirrored", 20, &[]);
    assert_eq!(versions(&res), [("v1".to_string(), 20)].into());
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while seen(&mesh.logs("reviews-v2-0", None)) < 20 {
        assert!(Instant::now() < deadline, "mirror copies never reached v2");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen(&mesh.logs("reviews-v3-0", None)), 0);
}

#[test]
fn bookinfo_ratings_delay_and_abort_for_jason() {
    let mesh = bookinfo("init");
    let ratings = "http://ratings:9080/ratings/0";

    mesh.apply(
        &sample("networking/virtual-service-ratings-test-abort.yaml"),
        &[CLIENT],
    );
    let jason = mesh.calls(CLIENT, ratings, 20, &["-H", "end-user: jason"]);
    assert!(
        jason.iter().all(|(c, r)| *c == 500 && r.is_none()),
        "{jason:?}"
    );
    let others = mesh.calls(CLIENT, ratings, 20, &[]);
    assert!(others.iter().all(|(c, r)| *c == 200 && r.is_some()));
    let m = mesh.metrics(CLIENT);
    let fi = metric_sum(
        &m,
        "istio_requests_total",
        &[
            "reporter=\"source\"",
            "response_code=\"500\"",
            "response_flags=\"FI\"",
        ],
    );
    assert_eq!(fi, 20.0, "abort metrics");
    // The app never saw jason's requests.
    let log = mesh.logs("ratings-v1-0", None);
    assert_eq!(log.matches("REQUEST GET /ratings/0").count(), 20, "{log}");

    mesh.apply(
        &sample("networking/virtual-service-ratings-test-delay.yaml"),
        &[CLIENT],
    );
    let t = Instant::now();
    let quick = mesh.calls(CLIENT, ratings, 5, &[]);
    assert!(quick.iter().all(|(c, _)| *c == 200));
    assert!(
        t.elapsed().as_secs_f64() < 3.0,
        "others were delayed: {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let slow = mesh.calls(CLIENT, ratings, 1, &["-H", "end-user: jason"]);
    let took = t.elapsed().as_secs_f64();
    assert_eq!(slow[0].0, 200);
    assert!(
        (7.0..10.0).contains(&took),
        "jason's call took {took:.2}s, rule says 7s"
    );
    let m = mesh.metrics(CLIENT);
    let di = metric_sum(
        &m,
        "istio_requests_total",
        &["reporter=\"source\"", "response_flags=\"DI\""],
    );
    assert_eq!(di, 1.0, "delay metrics");
}
