//! Resilience rules on `meshctl local` over Bookinfo's services: a connection-pool
//! circuit breaker answering `503 UO`, outlier detection ejecting a failing
//! endpoint and letting it back after it heals, retries hiding a flaky endpoint,
//! and a CORS preflight answered by the caller's proxy.

mod common;

use common::*;
use std::time::{Duration, Instant};

const CLIENT: &str = "productpage-v1-0";

fn bookinfo() -> Local {
    Local::up(&[
        "-f",
        &sample("platform"),
        "-f",
        &sample("networking/destination-rule-all.yaml"),
    ])
}

#[test]
fn circuit_breaker_and_retries() {
    let mesh = bookinfo();
    // ratings: one connection, one pending request, then overflow.
    let dr = mesh.file(
        "ratings-cb.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: ratings\nspec:\n  host: ratings\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n",
    );
    mesh.apply(&dr, &[CLIENT]);
    let out = mesh.exec(
        CLIENT,
        None,
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-Z",
            "--parallel-max",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            "http://ratings:9080/slow?delay_ms=300&i=[1-20]",
        ],
    );
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    let ok = codes.lines().filter(|c| *c == "200").count();
    let overflow = codes.lines().filter(|c| *c == "503").count();
    assert_eq!(ok + overflow, 20, "{codes}");
    assert!(ok >= 1 && overflow >= 5, "ok {ok}, 503 {overflow}: {codes}");
    let m = mesh.metrics(CLIENT);
    let uo = metric_sum(
        &m,
        "istio_requests_total",
        &["response_code=\"503\"", "response_flags=\"UO\""],
    );
    assert_eq!(uo, overflow as f64, "UO metrics");

    // Retries: ratings fails every 2nd request; 3 attempts on 5xx hide it.
    mesh.apply(&sample("networking/destination-rule-all.yaml"), &[CLIENT]);
    let retry_yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings, subset: v1}\n    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}\n";
    let vs = mesh.file("ratings-retry.yaml", retry_yaml);
    mesh.apply(&vs, &[CLIENT]);
    mesh.fault("ratings-v1-0", 9080, "status=503&every=2");
    let res = mesh.calls(CLIENT, "http://ratings:9080/flaky", 40, &[]);
    assert!(res.iter().all(|(c, _)| *c == 200), "{:?}", versions(&res));
    // The app saw the failures the client never did.
    let app_saw = mesh
        .logs("ratings-v1-0", None)
        .matches("/flaky?call=")
        .count();
    assert!(
        app_saw >= 60,
        "only {app_saw} requests reached ratings for 40 calls"
    );
    let m = mesh.admin("ratings-v1-0", "15090/stats/prometheus");
    let failed = metric_sum(
        &m,
        "istio_requests_total",
        &["reporter=\"destination\"", "response_code=\"503\""],
    );
    assert!(failed >= 20.0, "ratings' proxy counted {failed} 503s");
    // Without retries the same fault reaches the caller.
    let no_retry = retry_yaml.replace(
        "retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}",
        "retries: {attempts: 0}",
    );
    let no_retry = mesh.file("ratings-noretry.yaml", &no_retry);
    mesh.apply(&no_retry, &[CLIENT]);
    let res = mesh.calls(CLIENT, "http://ratings:9080/flaky", 40, &[]);
    let failed = res.iter().filter(|(c, _)| *c == 503).count();
    assert!(
        (15..=25).contains(&failed),
        "{failed} of 40 failed without retries"
    );
}

#[test]
fn outlier_detection_ejects_and_readmits() {
    let mesh = bookinfo();
    let dr = mesh.file(
        "reviews-od.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 2\n      interval: 1s\n      baseEjectionTime: 2s\n      maxEjectionPercent: 100\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v3}}\n",
    );
    mesh.apply(&dr, &[CLIENT]);
    mesh.fault("reviews-v3-0", 9080, "status=503&every=1");
    let first = mesh.calls(CLIENT, "http://reviews:9080/od", 60, &[]);
    let v = versions(&first);
    // Istio's default retry policy retries 503 on another host, so callers see
    // 200s; once ejected, v3 gets nothing.
    assert!(first.iter().all(|(c, _)| *c == 200), "{v:?}");
    let hits = |log: &str| log.matches("/od?call=").count();
    let v3_before = hits(&mesh.logs("reviews-v3-0", None));
    assert!(v3_before >= 2, "v3 was never tried ({v3_before})");
    let again = mesh.calls(CLIENT, "http://reviews:9080/od", 30, &[]);
    assert!(again.iter().all(|(c, _)| *c == 200));
    let v3_after = hits(&mesh.logs("reviews-v3-0", None));
    assert!(
        v3_after - v3_before <= 2,
        "ejected v3 still got {} requests",
        v3_after - v3_before
    );

    // Healed, v3 is readmitted once its ejection time has passed.
    mesh.fault("reviews-v3-0", 9080, "status=0");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let res = mesh.calls(CLIENT, "http://reviews:9080/back", 30, &[]);
        if versions(&res).get("v3").copied().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "v3 never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cors_preflight_is_answered_by_the_proxy() {
    let mesh = bookinfo();
    let vs = mesh.file(
        "ratings-cors.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings, subset: v1}\n    corsPolicy:\n      allowOrigins:\n      - exact: https://shop.example.com\n      - prefix: https://dev.\n      allowMethods: [GET, POST]\n      allowHeaders: [x-custom]\n      exposeHeaders: [x-echo-pod]\n      maxAge: 24h\n      allowCredentials: true\n",
    );
    mesh.apply(&vs, &[CLIENT]);
    let preflight = |origin: &str| {
        let out = mesh.exec(
            CLIENT,
            None,
            &[
                "curl",
                "-sS",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-X",
                "OPTIONS",
                "-H",
                &format!("Origin: {origin}"),
                "-H",
                "Access-Control-Request-Method: POST",
                "http://ratings:9080/cors",
            ],
        );
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let h = preflight("https://shop.example.com");
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        h.contains("access-control-allow-origin: https://shop.example.com"),
        "{h}"
    );
    assert!(h.contains("access-control-allow-methods: get,post"), "{h}");
    assert!(h.contains("access-control-allow-headers: x-custom"), "{h}");
    assert!(h.contains("access-control-max-age: 86400"), "{h}");
    assert!(h.contains("access-control-allow-credentials: true"), "{h}");
    let h = preflight("https://dev.example.org");
    assert!(
        h.contains("access-control-allow-origin: https://dev.example.org"),
        "{h}"
    );
    let h = preflight("https://evil.example.net");
    assert!(!h.contains("access-control-allow-origin"), "{h}");
    // Allowed preflights never reached the app; the one from a foreign origin is
    // not a CORS request the policy answers, so it is forwarded (as Envoy does).
    assert_eq!(
        mesh.logs("ratings-v1-0", None).matches("OPTIONS").count(),
        1
    );
    // A simple cross-origin GET reaches the app and carries the expose header.
    let out = mesh.exec(
        CLIENT,
        None,
        &[
            "curl",
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Origin: https://shop.example.com",
            "http://ratings:9080/cors",
        ],
    );
    let h = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        h.contains("access-control-expose-headers: x-echo-pod"),
        "{h}"
    );
}
