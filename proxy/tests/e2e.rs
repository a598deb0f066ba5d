//! mesh-proxy end to end, on pods built by the real CNI plugins, with the redirect
//! rules written by the real `mesh-cni redirect` (istio-init), the proxies running
//! as UID 1337 and the apps as UID 1000: requests from the client app really go
//! app → 15001 → server pod 15006 → app, and the metrics say so.

mod common;

use std::collections::BTreeMap;

use common::*;

#[test]
fn http1_and_h2c_go_through_both_sidecars() {
    let w = world(1, "ALLOW_ANY");
    let server = &w.servers[0];
    let url = format!("http://{VIP}:8080/hello?x=1");
    let r = curl_echo(
        &w.client,
        &[
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            &url,
        ],
    );
    assert_eq!(r.pod, server.name());
    // The app sees the inbound sidecar's passthrough source, proving the hop via 15006.
    assert!(r.peer.starts_with("127.0.0.6:"), "peer {}", r.peer);
    assert!(r.local.starts_with("127.0.0.1:8080"), "local {}", r.local);
    assert_eq!(
        r.headers.get("traceparent").map(String::as_str),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert!(
        r.headers.contains_key("x-request-id"),
        "request id generated: {:?}",
        r.headers
    );
    assert!(
        !r.headers.contains_key("x-mesh-peer-metadata"),
        "peer metadata must not reach the app"
    );

    // h2c from the app to a port declared `http`: Istio carries it as HTTP/1.1 upstream.
    let r2 = curl_echo(&w.client, &["--http2-prior-knowledge", &url]);
    assert_eq!(r2.protocol, "HTTP/1.1");
    assert!(r2.peer.starts_with("127.0.0.6:"));
    // To a port declared `http2`, HTTP/2 all the way to the app.
    let r3 = curl_echo(
        &w.client,
        &[
            "--http2-prior-knowledge",
            &format!("http://{H2_VIP}:8080/h2"),
        ],
    );
    assert_eq!(r3.protocol, "HTTP/2.0");
    assert!(r3.peer.starts_with("127.0.0.6:"));

    // h2load: 200 requests over 4 connections, all 2xx.
    let out = w
        .client
        .exec(APP, &["h2load", "-n", "200", "-c", "4", "-m", "4", &url])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("200 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("status codes: 200 2xx"), "{text}");

    // Both proxies counted the requests with Istio's names and labels.
    let cm = metrics(&w.client);
    let sm = metrics(server);
    let svc = "destination_service=\"echo.default.svc.cluster.local\"";
    let src = metric_sum(
        &cm,
        "istio_requests_total",
        &[
            "reporter=\"source\"",
            svc,
            "response_code=\"200\"",
            "source_workload=\"client\"",
            // Every answer named its workload, also those on a reused
            // connection that left the peer metadata out (`h1peer`).
            "destination_workload=\"echo-v1\"",
        ],
    );
    let dst = metric_sum(
        &sm,
        "istio_requests_total",
        &[
            "reporter=\"destination\"",
            svc,
            "response_code=\"200\"",
            "source_workload=\"client\"",
            "destination_version=\"v1\"",
        ],
    );
    assert_eq!(src, 202.0, "{cm}");
    assert_eq!(dst, 202.0, "{sm}");
    assert!(metric_sum(&cm, "istio_request_duration_milliseconds_count", &[svc]) >= 202.0);
    let h2svc = "destination_service=\"echo-h2.default.svc.cluster.local\"";
    assert_eq!(
        metric_sum(
            &sm,
            "istio_requests_total",
            &["reporter=\"destination\"", h2svc]
        ),
        1.0,
        "{sm}"
    );
    assert!(
        cm.contains("destination_workload=\"echo-v1\""),
        "peer metadata exchanged: {cm}"
    );
}

#[test]
fn tcp_and_server_first_protocols() {
    let w = world(1, "ALLOW_ANY");
    // Declared TCP port: echo through both sidecars.
    let script = format!("exec 3<>/dev/tcp/{TCP_VIP}/9000; echo ping >&3; read -r e <&3; echo $e");
    let out = w
        .client
        .exec(APP, &["timeout", "5", "bash", "-c", &script])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ping");
    let cm = metrics(&w.client);
    assert_eq!(
        metric_sum(
            &cm,
            "istio_tcp_connections_opened_total",
            &["destination_service=\"tcp-echo.default.svc.cluster.local\""]
        ),
        1.0,
        "{cm}"
    );
    assert_eq!(
        metric_sum(
            &cm,
            "istio_tcp_sent_bytes_total",
            &["destination_service=\"tcp-echo.default.svc.cluster.local\""]
        ),
        5.0,
        "{cm}"
    );
}

#[test]
fn registry_only_refuses_unknown_destinations_allow_any_passes() {
    for (policy, expect_ok) in [("ALLOW_ANY", true), ("REGISTRY_ONLY", false)] {
        let w = world(1, policy);
        // An address no service owns: a pod outside the registry, reached directly on another port.
        let outside = w.servers[0].ip();
        let code = http_code(&w.client, &[&format!("http://{outside}:8081/")]);
        if expect_ok {
            // Passed through to the original destination: the server's sidecar answers
            // (nothing listens on 8081 there), i.e. the request left the client pod.
            assert_ne!(code, "502", "{policy}: {code}");
        } else {
            assert_eq!(code, "502", "{policy}");
            let cm = metrics(&w.client);
            assert!(
                metric_sum(
                    &cm,
                    "istio_requests_total",
                    &["response_flags=\"NR\"", "response_code=\"502\""]
                ) >= 1.0,
                "{cm}"
            );
        }
    }
}

#[test]
fn three_endpoints_share_the_load() {
    let w = world(3, "ALLOW_ANY");
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..60 {
        let r = curl_echo(&w.client, &[&format!("http://{VIP}:8080/")]);
        *counts.entry(r.pod).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|c| *c >= 8),
        "least-request spreads sequential calls: {counts:?}"
    );
}

#[test]
fn access_log_and_pod_ip_bound_app() {
    let mut w = world_with(1, "ALLOW_ANY", &["--access-log", "text"]);
    // A second app in the server pod that binds only to the pod IP: the inbound
    // sidecar falls back from 127.0.0.1 to the pod IP.
    let server = &w.servers[0];
    let echo = mesh_e2e::bins::workspace_bin("mesh-echo");
    let ip = server.ip().to_string();
    let mut only_pod_ip = server
        .spawn(
            APP,
            &[
                echo.to_str().unwrap(),
                "--port",
                "8181",
                "--bind",
                &ip,
                "--pod",
                "pod-ip-app",
            ],
        )
        .unwrap();
    only_pod_ip
        .wait_for_line("mesh-echo listening", Duration::from_secs(5))
        .unwrap();
    let r = curl_echo(&w.client, &[&format!("http://{ip}:8181/direct")]);
    assert_eq!(r.pod, "pod-ip-app");
    assert!(r.peer.starts_with("127.0.0.6:"), "{}", r.peer);
    assert_eq!(r.local, format!("{ip}:8181"));

    curl_echo(
        &w.client,
        &[
            "-A",
            "access-log-test",
            &format!("http://{VIP}:8080/logged"),
        ],
    );
    let line = w
        .client_proxy
        .wait_for_line("\"GET /logged HTTP/1.1\" 200", Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("\"access-log-test\""), "{line}");
    assert!(
        line.contains("outbound|8080||echo.default.svc.cluster.local"),
        "{line}"
    );
    let inbound = w.server_procs[0]
        .1
        .wait_for_line("\"GET /logged HTTP/1.1\" 200", Duration::from_secs(5))
        .unwrap();
    assert!(inbound.contains("inbound|8080||"), "{inbound}");
}

#[test]
fn connection_pool_overflow_is_503_uo() {
    let mut w = world(1, "ALLOW_ANY");
    w.update(|v| {
        let dr: mesh_api::networking::DestinationRuleSpec = serde_json::from_value(serde_json::json!({
            "host": "echo.default.svc.cluster.local",
            "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}}
        }))
        .unwrap();
        v.destination_rules.insert("echo.default.svc.cluster.local".into(), dr);
    });
    w.wait_applied();
    let url = format!("http://{VIP}:8080/slow?delay_ms=20");
    let out = w
        .client
        .exec(APP, &["h2load", "--h1", "-n", "100", "-c", "10", &url])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        !codes.contains(" 0 5xx"),
        "overflow must produce 503s: {text}"
    );
    assert!(
        !codes.contains(" 0 2xx"),
        "admitted requests still succeed: {text}"
    );
    let cm = metrics(&w.client);
    let uo = metric_sum(
        &cm,
        "istio_requests_total",
        &["response_code=\"503\"", "response_flags=\"UO\""],
    );
    let ok = metric_sum(
        &cm,
        "istio_requests_total",
        &["response_code=\"200\"", "reporter=\"source\""],
    );
    assert!(uo >= 1.0 && ok >= 1.0, "uo={uo} ok={ok}\n{cm}");
    assert_eq!(uo + ok, 100.0, "{cm}");
}

#[test]
fn upstream_http1_connections_are_reused() {
    let w = world(1, "ALLOW_ANY");
    let url = format!("http://{VIP}:8080/reuse");
    // One client connection, many requests: the inbound sidecar's connection to
    // the app (seen as the app's peer port) must be reused, not reopened.
    let mut args: Vec<&str> = vec!["-sS", "--max-time", "10"];
    for _ in 0..40 {
        args.push(&url);
    }
    let out = w
        .client
        .exec(APP, &[&["curl"][..], &args[..]].concat())
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace("}{", "}\n{");
    let peers: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<EchoReply>(l).unwrap().peer)
        .collect();
    assert!(
        peers.len() <= 3,
        "40 requests used {} upstream connections: {peers:?}",
        peers.len()
    );
}

#[test]
fn peer_metadata_left_out_on_a_reused_connection_is_still_counted() {
    let w = world(1, "ALLOW_ANY");
    let url = |p: &str| format!("http://{VIP}:8080/{p}");
    // One client connection, so one upstream connection between the
    // sidecars: the first request tells, the others leave the metadata out.
    // The second asks `Expect: 100-continue`, which the server sidecar's own
    // HTTP/1 server leaves to hyper's, mid-connection.
    let (a, b, c) = (url("a"), url("b"), url("c"));
    let out = curl(
        &w.client,
        &[
            "-s",
            &a,
            "--next",
            "-s",
            "-H",
            "Expect: 100-continue",
            "-d",
            "hello",
            &b,
            "--next",
            "-s",
            &c,
            "--next",
            "-s",
            &a,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace("}{", "}\n{");
    let replies: Vec<EchoReply> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 4, "{text}");
    for r in &replies {
        assert!(
            !r.headers.contains_key("x-mesh-peer-metadata"),
            "{:?}",
            r.headers
        );
    }
    assert_eq!(
        replies[1].headers.get("expect").map(String::as_str),
        Some("100-continue")
    );
    let named = |m: &str, needles: &[&str]| metric_sum(m, "istio_requests_total", needles);
    let sm = metrics(&w.servers[0]);
    assert_eq!(
        named(
            &sm,
            &["reporter=\"destination\"", "source_workload=\"client\""]
        ),
        4.0,
        "{sm}"
    );
    let cm = metrics(&w.client);
    assert_eq!(
        named(
            &cm,
            &["reporter=\"source\"", "destination_workload=\"echo-v1\""]
        ),
        4.0,
        "{cm}"
    );
}

#[test]
fn peer_metadata_goes_only_to_mesh_endpoints() {
    let mut w = world(1, "ALLOW_ANY");
    // A server outside the mesh (no sidecar) that echoes the headers it got,
    // reached as a MESH_EXTERNAL ServiceEntry host and by passthrough.
    let ext = w.node.add_pod("ext-0", "default").unwrap();
    let mut ext_echo = start_echo(&ext, "ext");
    const EXT_VIP: &str = "10.96.0.30";
    let mut entry = svc(
        "api.external.test",
        EXT_VIP,
        8080,
        "http",
        "HTTP",
        &[(ext.ip(), "ext")],
    );
    entry.origin = "ServiceEntry".into();
    entry.location = Some("MESH_EXTERNAL".into());
    entry.endpoints[0].labels.clear();
    w.update(|v| v.services.push(entry.into()));
    w.wait_applied();
    let peer_header = "x-mesh-peer-metadata";
    let external = curl_echo(
        &w.client,
        &[
            "-H",
            "Host: api.external.test",
            &format!("http://{EXT_VIP}:8080/service-entry"),
        ],
    );
    assert_eq!(external.pod, "ext-0");
    assert!(
        !external.headers.contains_key(peer_header),
        "caller identity leaked to a ServiceEntry host: {:?}",
        external.headers
    );
    let passthrough = curl_echo(
        &w.client,
        &[&format!("http://{}:8080/passthrough", ext.ip())],
    );
    assert_eq!(passthrough.pod, "ext-0");
    assert!(
        !passthrough.headers.contains_key(peer_header),
        "caller identity leaked to a passthrough destination: {:?}",
        passthrough.headers
    );
    ext_echo
        .wait_for_line("REQUEST GET /passthrough", Duration::from_secs(5))
        .unwrap();
    // The meshed server's sidecar still learns who called (and strips it).
    let meshed = curl_echo(&w.client, &[&format!("http://{VIP}:8080/meshed")]);
    assert!(!meshed.headers.contains_key(peer_header));
    let sm = metrics(&w.servers[0]);
    assert_eq!(
        metric_sum(
            &sm,
            "istio_requests_total",
            &["reporter=\"destination\"", "source_workload=\"client\""]
        ),
        1.0,
        "{sm}"
    );
    let cm = metrics(&w.client);
    assert!(cm.contains("destination_workload=\"echo-v1\""), "{cm}");
}
