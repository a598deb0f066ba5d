//! Run-time state outlasts config pushes, as in Envoy: an endpoint ejected by
//! outlier detection stays out for its ejection time, and a connection-pool
//! limit keeps counting what is in flight, whatever else the push changed.
//! Real sidecars fed a view file; the push is a rewritten view, applied when
//! the config dump shows its version.

mod common;

use std::net::IpAddr;

use common::*;

const HOST: &str = "echo.default.svc.cluster.local";
const CLUSTER: &str = "outbound|8080||echo.default.svc.cluster.local";

fn url(path: &str) -> String {
    format!("http://{VIP}:8080{path}")
}

/// An unrelated change: one more service (on the first server's address).
fn add_unrelated_service(w: &mut World) {
    let ip = w.servers[0].ip();
    w.update(|v| {
        v.services.push(
            svc(
                "unrelated.default.svc.cluster.local",
                "10.96.0.50",
                7000,
                "http",
                "HTTP",
                &[(ip, "v1")],
            )
            .into(),
        )
    });
    w.wait_applied();
}

/// The client proxy's config-dump row for an endpoint of the echo cluster.
fn endpoint_row(w: &World, ip: IpAddr) -> Option<serde_json::Value> {
    let dump: serde_json::Value =
        serde_json::from_str(&admin(&w.client, "/config_dump")).unwrap_or_default();
    let want = format!("{ip}:8080");
    dump["compiled"]["endpoints"]
        .as_array()?
        .iter()
        .find(|r| r["cluster"] == CLUSTER && r["endpoint"] == want.as_str())
        .cloned()
}

fn outlier_check(w: &World, ip: IpAddr) -> String {
    endpoint_row(w, ip)
        .map(|r| r["outlierCheck"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn requests_seen(pod: &Pod) -> u64 {
    echo_stats(pod)["requests"].as_u64().unwrap()
}

#[test]
fn an_ejected_endpoint_stays_out_across_pushes() {
    let mut w = world(3, "ALLOW_ANY");
    let (bad, good, later) = (w.servers[0].ip(), w.servers[1].ip(), w.servers[2].ip());
    // Start with two endpoints; the third joins in a later push.
    let dr: mesh_api::networking::DestinationRuleSpec = serde_yaml_ng::from_str(
        "host: echo\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN}\n  outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 300s, maxEjectionPercent: 50}\n",
    )
    .unwrap();
    w.update(|v| {
        std::sync::Arc::make_mut(&mut v.services[0])
            .endpoints
            .retain(|e| e.address != later.to_string());
        v.destination_rules.insert(HOST.into(), dr);
    });
    w.wait_applied();
    let out = w.servers[0]
        .exec(
            0,
            &[
                "curl",
                "-s",
                "http://127.0.0.1:8080/__echo/fault?status=503",
            ],
        )
        .unwrap();
    assert!(out.status.success());

    // Istio's default retries take every call to the good endpoint; the bad
    // one's three 503s in a row eject it.
    let mut calls = 0;
    until("the failing endpoint is ejected", 20, || {
        assert!(calls < 40, "not ejected after {calls} calls");
        calls += 1;
        assert_eq!(curl_echo(&w.client, &[&url("/")]).pod, w.servers[1].name());
        (outlier_check(&w, bad) == "FAILED").then_some(())
    });
    let ejected_at = Instant::now();
    let seen = requests_seen(&w.servers[0]);
    assert!(
        (3..=6).contains(&seen),
        "bad endpoint saw {seen} before ejection"
    );

    // An unrelated push: still ejected, still no traffic.
    add_unrelated_service(&mut w);
    assert_eq!(outlier_check(&w, bad), "FAILED", "after an unrelated push");
    assert_eq!(outlier_check(&w, good), "OK");
    for _ in 0..10 {
        assert_eq!(curl_echo(&w.client, &[&url("/")]).pod, w.servers[1].name());
    }
    assert_eq!(
        requests_seen(&w.servers[0]),
        seen,
        "an ejected endpoint gets no traffic"
    );

    // A push that changes this cluster's endpoints: the new one takes traffic,
    // the ejected one stays out.
    w.update(|v| {
        let mut eps = v.services[0].endpoints[0].clone();
        eps.address = later.to_string();
        eps.labels.insert("version".into(), "v3".into());
        std::sync::Arc::make_mut(&mut v.services[0])
            .endpoints
            .push(eps);
    });
    w.wait_applied();
    assert_eq!(outlier_check(&w, bad), "FAILED", "after an endpoint change");
    assert_eq!(outlier_check(&w, later), "OK");
    let mut pods = std::collections::BTreeSet::new();
    for _ in 0..12 {
        pods.insert(curl_echo(&w.client, &[&url("/")]).pod);
    }
    assert_eq!(
        pods,
        [w.servers[1].name(), w.servers[2].name()]
            .map(String::from)
            .into(),
        "the good endpoints share the load"
    );
    assert_eq!(
        requests_seen(&w.servers[0]),
        seen,
        "an ejected endpoint gets no traffic"
    );
    // All of this happened inside the ejection time (300 s).
    assert!(ejected_at.elapsed() < Duration::from_secs(300));
}

#[test]
fn a_connection_pool_limit_holds_across_a_push() {
    let mut w = world(1, "ALLOW_ANY");
    let dr: mesh_api::networking::DestinationRuleSpec = serde_yaml_ng::from_str(
        "host: echo\ntrafficPolicy:\n  connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}\n",
    )
    .unwrap();
    w.update(|v| {
        v.destination_rules.insert(HOST.into(), dr);
    });
    w.wait_applied();
    let background = |path: &str| {
        let u = url(path);
        let argv = [
            "curl",
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            &u,
        ];
        w.client.spawn(APP, &argv).unwrap()
    };
    let uo = |w: &World| {
        metric_sum(
            &metrics(&w.client),
            "istio_requests_total",
            &["response_code=\"503\"", "response_flags=\"UO\""],
        )
    };

    // A holds the one connection (slow upstream); B waits for it.
    let mut a = background("/slow?delay_ms=6000&n=a");
    until("A reaches the app", 10, || {
        (echo_stats(&w.servers[0])["inFlight"] == 1).then_some(())
    });
    let mut b = background("/slow?n=b");
    let pending = format!("{CLUSTER}::rq_pending_active::1\n");
    until("B is queued", 10, || {
        admin(&w.client, "/clusters")
            .contains(&pending)
            .then_some(())
    });
    // A third overflows at once.
    assert_eq!(http_code(&w.client, &[&url("/c0")]), "503");
    assert_eq!(uo(&w), 1.0);

    // A push (while A is still at the app, 6 s): the pool keeps counting A and B.
    add_unrelated_service(&mut w);
    assert_eq!(
        echo_stats(&w.servers[0])["inFlight"],
        1,
        "A still in flight"
    );
    assert!(
        admin(&w.client, "/clusters").contains(&pending),
        "B still queued after the push"
    );
    assert_eq!(
        http_code(&w.client, &[&url("/c1")]),
        "503",
        "still over the limit after the push"
    );
    assert_eq!(uo(&w), 2.0);

    // A, then B, are answered; the app never had two at once.
    for (name, p) in [("A", &mut a), ("B", &mut b)] {
        let code = p.wait_for_line("", Duration::from_secs(20)).unwrap();
        assert_eq!(code, "200", "{name}");
    }
    let stats = echo_stats(&w.servers[0]);
    assert_eq!(stats["maxInFlight"], 1, "{stats}");
    assert_eq!(
        stats["requests"], 2,
        "only A and B reached the app: {stats}"
    );
}
