//! Rendering Istio's metric names and labels, the workload labels of endpoints
//! and inbound peers, and the `istio_build` gauge.

use super::*;

#[test]
fn renders_istio_names_and_labels() {
    let m = Metrics::default();
    let labels = RequestLabels {
        reporter: Reporter::Source,
        source: Workload::unknown(),
        destination: Workload::unknown(),
        destination_service: Arc::from("reviews.default.svc.cluster.local"),
        destination_service_name: Arc::from("reviews"),
        destination_service_namespace: Arc::from("default"),
        request_protocol: "http",
        response_code: 200,
        grpc_response_status: None,
        response_flags: "-",
        connection_security_policy: "unknown",
    };
    m.record_request(labels.clone(), 3.0, 0, 1200);
    m.record_request(labels, 700.0, 10, 1200);
    let text = m.render();
    assert!(
        text.contains("istio_requests_total{reporter=\"source\""),
        "{text}"
    );
    assert!(text.contains("response_code=\"200\""));
    assert!(text.contains("destination_service_name=\"reviews\""));
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap();
    assert!(line.ends_with(" 2"), "{line}");
    assert!(text.contains("le=\"5\"} 1"), "cumulative buckets: {text}");
    assert!(text.contains("istio_request_duration_milliseconds_count{"));
    assert!(text.contains("istio_request_duration_milliseconds_sum{") && text.contains("} 703"));
}

#[test]
fn requests_with_equal_labels_share_a_series_however_their_strings_are_held() {
    let m = Metrics::default();
    let labels = |code: u16, service: &str| RequestLabels {
        reporter: Reporter::Destination,
        source: Workload::unknown(),
        destination: Workload::unknown(),
        destination_service: Arc::from(service),
        destination_service_name: Arc::from("reviews"),
        destination_service_namespace: Arc::from("default"),
        request_protocol: "http",
        response_code: code,
        grpc_response_status: None,
        response_flags: "-",
        connection_security_policy: "mutual_tls",
    };
    let a = labels(200, "reviews.default.svc.cluster.local");
    // The same allocations (the last series, found by pointers), equal
    // strings held apart (found by hashing), another code, another service,
    // and back to the first series after others.
    for l in [
        a.clone(),
        a.clone(),
        labels(200, "reviews.default.svc.cluster.local"),
        labels(503, "reviews.default.svc.cluster.local"),
        labels(200, "ratings.default.svc.cluster.local"),
        a.clone(),
        a,
    ] {
        m.record_request(l, 1.0, 0, 0);
    }
    let text = m.render();
    let counts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    assert_eq!(counts.len(), 3, "{text}");
    let count = |needles: &[&str]| {
        counts
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    let reviews = "destination_service=\"reviews.default";
    assert_eq!(count(&[reviews, "code=\"200\""]).as_deref(), Some("5"));
    assert_eq!(count(&[reviews, "code=\"503\""]).as_deref(), Some("1"));
    assert_eq!(count(&["\"ratings.default"]).as_deref(), Some("1"));
    // Series render in the order they appeared.
    assert!(counts[0].contains(reviews) && counts[0].contains("code=\"200\""));
    assert!(counts[2].contains("\"ratings.default"));
}

#[test]
fn an_endpoint_describes_its_canonical_service_and_namespace() {
    let labels: BTreeMap<String, String> = [
        ("app", "ratings"),
        ("version", "v1"),
        (CANONICAL_NAME, "ratings-canon"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let w = Workload::of_endpoint(&labels, &Arc::from("shop"));
    assert_eq!(&*w.namespace, "shop");
    assert_eq!(&*w.canonical_service, "ratings-canon");
    assert_eq!(&*w.canonical_revision, "v1");
    assert_eq!((&*w.app, &*w.version), ("ratings", "v1"));
    assert_eq!((&*w.workload, &*w.principal), ("unknown", "unknown"));
    let bare = Workload::of_endpoint(&BTreeMap::new(), &Arc::from("shop"));
    assert_eq!(&*bare.canonical_service, "unknown");
    assert_eq!(&*bare.canonical_revision, "latest");
}

#[test]
fn an_inbound_peer_is_described_only_by_an_endpoint_of_its_identity() {
    let labels: BTreeMap<String, String> = [("app", "reviews"), ("version", "v2")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ns: Arc<str> = Arc::from("shop");
    let p = "spiffe://cluster.local/ns/shop/sa/reviews";
    let w = Workload::of_peer(p, "shop", "reviews", Some((&labels, &ns, Some("reviews"))));
    assert_eq!(
        (&*w.canonical_service, &*w.canonical_revision),
        ("reviews", "v2")
    );
    assert_eq!((&*w.principal, &*w.namespace), (p, "shop"));
    // Another account, another namespace, or no endpoint: identity only.
    let other: Arc<str> = Arc::from("bank");
    for ep in [
        Some((&labels, &ns, Some("ratings"))),
        Some((&labels, &other, Some("reviews"))),
        Some((&labels, &ns, None)),
        None,
    ] {
        let w = Workload::of_peer(p, "shop", "reviews", ep);
        assert_eq!(&*w.canonical_service, "unknown", "{ep:?}");
        assert_eq!((&*w.principal, &*w.namespace), (p, "shop"));
    }
}

#[test]
fn reports_the_proxy_build_as_istio_does() {
    let text = Metrics::default().render();
    let want = format!(
        "istio_build{{component=\"proxy\",tag=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.lines().any(|l| l == want), "{text}");
    assert!(text.contains("# TYPE istio_build gauge\n"), "{text}");
}
