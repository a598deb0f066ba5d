//! Distributed tracing through a real client sidecar + server sidecar pair: the
//! spans both proxies export to a Zipkin v2 receiver on the node (CLIENT and
//! SERVER, linked, with Istio's tags), the context headers the app sees,
//! sampling proportions, a dead collector that costs no request, and the
//! gateway's (`mesh-proxy router`) CLIENT span.

mod common;
mod gwfix;

use common::*;
use mesh_api::tracing::{CustomTag, TracingProvider, TracingView};
use mesh_e2e::zipkin::Collector;
use serde_json::Value;

/// A port on the node's bridge address (where pods reach the node).
fn bind_on_node(node: &Node) -> std::net::TcpListener {
    mesh_e2e::zipkin::bind_in(node.netns(), mesh_e2e::harness::GATEWAY)
}

fn collector(node: &Node) -> Collector {
    Collector::start(bind_on_node(node))
}

fn tracing(addr: &str, sampling: f64) -> TracingView {
    TracingView {
        provider: Some(TracingProvider::Zipkin {
            address: addr.into(),
        }),
        sampling,
        custom_tags: [("team".to_string(), CustomTag::literal("shop"))].into(),
        disable_span_reporting: false,
    }
}

/// Sets the view's tracing and waits until both proxies run it.
fn set_tracing(w: &mut World, t: TracingView) {
    w.update(|v| v.tracing = Some(t));
    let want = w.view.version;
    for pod in std::iter::once(&w.client).chain(&w.servers) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let dump = pod
                .exec(0, &["curl", "-s", "http://127.0.0.1:15000/config_dump"])
                .unwrap();
            let v: Value = serde_json::from_slice(&dump.stdout).unwrap_or_default();
            if v["version"] == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "version {want} never applied in {}",
                pod.name()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

const URL: &str = "http://10.96.0.10:8080/hello?x=1";

fn tag<'a>(s: &'a Value, k: &str) -> &'a str {
    s["tags"][k]
        .as_str()
        .unwrap_or_else(|| panic!("no tag {k}: {s}"))
}

#[test]
fn one_call_gives_a_linked_client_and_server_span_and_the_app_sees_the_context() {
    let mut w = world(1, "ALLOW_ANY");
    let zipkin = collector(&w.node);
    set_tracing(&mut w, tracing(&zipkin.addr, 100.0));
    let reply = curl_echo(&w.client, &["-H", "x-request-id: one-call", URL]);
    let spans = zipkin.wait_for("one-call", 2);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let client = spans
        .iter()
        .find(|s| s["kind"] == "CLIENT")
        .expect("client span");
    let server = spans
        .iter()
        .find(|s| s["kind"] == "SERVER")
        .expect("server span");
    assert_eq!(client["traceId"], server["traceId"]);
    assert_eq!(client["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(
        server["parentId"], client["id"],
        "server span is the client span's child"
    );
    assert!(client.get("parentId").is_none(), "{client}");
    assert_eq!(client["name"], "10.96.0.10:8080/hello");
    assert_eq!(server["name"], "echo.default.svc.cluster.local:8080/*");
    assert_eq!(client["localEndpoint"]["serviceName"], "client.default");
    assert_eq!(server["localEndpoint"]["serviceName"], "echo.default");
    assert_eq!(
        client["remoteEndpoint"]["ipv4"],
        w.servers[0].ip().to_string()
    );
    for s in [client, server] {
        assert_eq!(tag(s, "component"), "proxy");
        assert_eq!(tag(s, "http.method"), "GET");
        assert_eq!(tag(s, "http.url"), "http://10.96.0.10:8080/hello?x=1");
        assert_eq!(tag(s, "http.protocol"), "HTTP/1.1");
        assert_eq!(tag(s, "http.status_code"), "200");
        assert_eq!(tag(s, "response_flags"), "-");
        assert_eq!(tag(s, "downstream_cluster"), "-");
        assert_eq!(tag(s, "request_size"), "0");
        assert_ne!(tag(s, "response_size"), "0");
        assert_eq!(tag(s, "istio.namespace"), "default");
        assert_eq!(tag(s, "istio.mesh_id"), "cluster.local");
        assert_eq!(tag(s, "team"), "shop");
        assert!(s["tags"].get("error").is_none(), "{s}");
        assert!(s["duration"].as_u64().unwrap() > 0);
    }
    assert_eq!(
        tag(client, "upstream_cluster"),
        "outbound|8080||echo.default.svc.cluster.local"
    );
    assert_eq!(tag(server, "upstream_cluster"), "inbound|8080||");
    assert_eq!(tag(client, "istio.canonical_service"), "client");
    assert_eq!(tag(server, "istio.canonical_service"), "echo");
    assert_eq!(tag(server, "istio.canonical_revision"), "v1");
    assert!(tag(client, "node_id").starts_with("sidecar~"), "{client}");
    assert_eq!(tag(server, "peer.address"), w.client.ip().to_string());
    // The app gets the context to forward, with the SERVER span as its parent.
    let h = &reply.headers;
    let (trace, sid) = (
        server["traceId"].as_str().unwrap(),
        server["id"].as_str().unwrap(),
    );
    assert_eq!(h["x-b3-traceid"], trace);
    assert_eq!(h["x-b3-spanid"], sid);
    assert_eq!(h["x-b3-parentspanid"], client["id"].as_str().unwrap());
    assert_eq!(h["x-b3-sampled"], "1");
    assert_eq!(h["traceparent"], format!("00-{trace}-{sid}-01"));
    assert_eq!(h["x-request-id"], "one-call");

    // An incoming W3C context is continued, and its "not sampled" respected:
    // only the forced call below is exported, the context still reaches the app.
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let reply = curl_echo(
        &w.client,
        &[
            "-H",
            &format!("traceparent: {parent}"),
            "-H",
            "x-request-id: unsampled",
            URL,
        ],
    );
    assert_eq!(
        reply.headers["x-b3-traceid"],
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(reply.headers["x-b3-sampled"], "0");
    let b3 = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1";
    curl_echo(
        &w.client,
        &[
            "-H",
            &format!("b3: {b3}"),
            "-H",
            "x-request-id: b3-single",
            URL,
        ],
    );
    let spans = zipkin.wait_for("b3-single", 2);
    let client = spans.iter().find(|s| s["kind"] == "CLIENT").unwrap();
    assert_eq!(client["traceId"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(client["parentId"], "b7ad6b7169203331");
    assert!(zipkin
        .spans()
        .iter()
        .all(|s| s["tags"]["guid:x-request-id"] != "unsampled"));
}

/// Runs `n` calls from the client app, then one forced call (`x-client-trace-id`)
/// whose spans, exported after every earlier one, say the collector has seen
/// all there is to see. Returns the CLIENT and SERVER spans of the `n` calls.
fn sampled_over(w: &World, zipkin: &Collector, n: usize, marker: &str) -> (usize, usize) {
    let before: usize = zipkin.spans().len();
    let out = w
        .client
        .exec(
            APP,
            &["h2load", "--h1", "-n", &n.to_string(), "-c", "4", URL],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{n} succeeded")), "{text}");
    curl_echo(
        &w.client,
        &[
            "-H",
            "x-client-trace-id: force",
            "-H",
            &format!("x-request-id: {marker}"),
            URL,
        ],
    );
    zipkin.wait_for(marker, 2);
    let spans = zipkin.spans();
    let new = spans[before..]
        .iter()
        .filter(|s| s["tags"]["guid:x-request-id"] != marker);
    let (mut c, mut s) = (0, 0);
    for sp in new {
        if sp["kind"] == "CLIENT" {
            c += 1
        } else {
            s += 1
        }
    }
    (c, s)
}

#[test]
fn sampling_percentage_gives_the_right_proportion() {
    let mut w = world(1, "ALLOW_ANY");
    let zipkin = collector(&w.node);
    set_tracing(&mut w, tracing(&zipkin.addr, 0.0));
    assert_eq!(sampled_over(&w, &zipkin, 1000, "zero"), (0, 0));
    set_tracing(&mut w, tracing(&zipkin.addr, 50.0));
    let (c, s) = sampled_over(&w, &zipkin, 1000, "half");
    // Binomial(1000, 0.5): σ ≈ 15.8; 5σ ≈ 79.
    assert!((421..=579).contains(&c), "{c} of 1000 sampled at 50 %");
    // The server sidecar follows the client's decision: one SERVER span per CLIENT span.
    assert_eq!(s, c);
}

#[test]
fn a_dead_collector_loses_no_request_and_counts_dropped_spans() {
    let mut w = world(1, "ALLOW_ANY");
    // A port that was bound on the node and closed again: connections are refused.
    let dead = bind_on_node(&w.node).local_addr().unwrap().to_string();
    set_tracing(&mut w, tracing(&dead, 100.0));
    let out = w
        .client
        .exec(APP, &["h2load", "--h1", "-n", "300", "-c", "4", URL])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("300 succeeded"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(&w.client);
        let dropped = metric_value(&m, "mesh_tracing_spans_dropped_total");
        if dropped >= 300.0 {
            assert_eq!(metric_value(&m, "mesh_tracing_spans_exported_total"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "dropped {dropped} of 300:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn the_gateway_makes_a_client_span_and_passes_the_context_on() {
    let vs = "hosts: ['*']\ngateways: [istio-system/ingress]\nhttp:\n- route: [{destination: {host: echo, port: {number: 8080}}}]\n";
    let mut w = gwfix::gw_world(
        vec![gwfix::listener(
            8080,
            80,
            vec![gwfix::server(0, "HTTP", &["*"], &["default/all"])],
        )],
        &[("default/all", vs)],
    );
    let zipkin = collector(&w.node);
    w.view.tracing = Some(tracing(&zipkin.addr, 100.0));
    w.update(|_| {});
    let url = format!("http://{}:8080/productpage", w.ip());
    let reply = curl_echo(
        &w.client,
        &[
            "-H",
            "host: shop.example.com",
            "-H",
            "x-request-id: via-gw",
            &url,
        ],
    );
    let spans = zipkin.wait_for("via-gw", 1);
    let s = &spans[0];
    assert_eq!(s["kind"], "CLIENT");
    assert_eq!(s["name"], "shop.example.com:8080/productpage");
    assert!(tag(s, "node_id").starts_with("router~"), "{s}");
    assert_eq!(
        tag(s, "upstream_cluster"),
        "outbound|8080||echo.default.svc.cluster.local"
    );
    assert_eq!(tag(s, "http.status_code"), "200");
    assert_eq!(s["remoteEndpoint"]["ipv4"], w.app.ip().to_string());
    // The app (no sidecar here) sees the gateway's span as its parent.
    assert_eq!(reply.headers["x-b3-spanid"], s["id"].as_str().unwrap());
    assert_eq!(
        reply.headers["x-b3-traceid"],
        s["traceId"].as_str().unwrap()
    );
}
