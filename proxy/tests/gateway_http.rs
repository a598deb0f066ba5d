//! `mesh-proxy router` with plaintext servers, as Bookinfo's gateway is used:
//! host routing by `:authority`, 404 `NR` outside the routes, per-match
//! `gateways`, `httpsRedirect`, Istio metrics with the gateway as source
//! workload; listeners following the view (a port added, a port that cannot
//! be bound, a port removed); TCP servers; h2c through an HTTP2 server; gRPC
//! (grpcio client and server) through a GRPC server.

mod common;
mod gwfix;

use common::*;
use gwfix::*;

const BOOKINFO: &str = "hosts: [bookinfo.example.com]\ngateways: [istio-system/ingress]\nhttp:\n- match: [{uri: {prefix: /other-gw}, gateways: [istio-system/other]}]\n  route: [{destination: {host: echo, port: {number: 8080}}}]\n- match: [{uri: {prefix: /productpage}}, {uri: {regex: '/api/v[0-9]+/.*'}}]\n  route: [{destination: {host: echo, port: {number: 8080}}}]\n";

fn code(w: &Gw, host: &str, port: u16, path: &str) -> String {
    let url = format!("http://{}:{port}{path}", w.ip());
    let h = format!("host: {host}");
    http_code(&w.client, &["-H", &h, &url])
}

#[test]
fn http_servers_route_by_host_redirect_and_answer_404_nr() {
    let mut w = gw_world(
        vec![listener(
            8080,
            80,
            vec![
                server(0, "HTTP", &["bookinfo.example.com"], &["default/bookinfo"]),
                GatewayServerExt::redirect(server(1, "HTTP", &["*.secure.example.com"], &[])),
            ],
        )],
        &[("default/bookinfo", BOOKINFO)],
    );
    let url = format!("http://{}:8080/productpage?u=1", w.ip());
    let reply = curl_echo(&w.client, &["-H", "host: bookinfo.example.com", &url]);
    assert_eq!(reply.pod, "echo-v1-0");
    assert_eq!(reply.path, "/productpage");
    let client_ip = w.client.ip().to_string();
    assert_eq!(reply.headers["x-forwarded-proto"], "http");
    assert_eq!(reply.headers["x-forwarded-for"], client_ip);
    assert_eq!(reply.headers["x-envoy-external-address"], client_ip);
    assert_eq!(
        code(&w, "bookinfo.example.com", 8080, "/api/v1/items"),
        "200"
    );
    // Outside every route, a match restricted to another gateway, another host.
    assert_eq!(code(&w, "bookinfo.example.com", 8080, "/nothing"), "404");
    assert_eq!(code(&w, "bookinfo.example.com", 8080, "/other-gw"), "404");
    assert_eq!(code(&w, "unknown.example.com", 8080, "/productpage"), "404");

    let out = curl(
        &w.client,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "host: shop.secure.example.com",
            &format!("http://{}:8080/cart?id=7", w.ip()),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "301 https://shop.secure.example.com/cart?id=7"
    );

    let m = w.metrics();
    let src = [
        "reporter=\"source\"",
        "source_workload=\"istio-ingressgateway\"",
    ];
    let ok = [
        &src[..],
        &[
            "response_code=\"200\"",
            "destination_service=\"echo.default.svc.cluster.local\"",
        ],
    ]
    .concat();
    assert_eq!(metric_sum(&m, "istio_requests_total", &ok), 2.0, "{m}");
    let nr = [
        &src[..],
        &["response_code=\"404\"", "response_flags=\"NR\""],
    ]
    .concat();
    assert_eq!(metric_sum(&m, "istio_requests_total", &nr), 3.0, "{m}");

    // A port added, a port that cannot be bound (the prometheus port), while
    // 8080 keeps its socket.
    w.update(|g| {
        g.listeners.push(listener(
            8081,
            81,
            vec![server(0, "HTTP", &["*"], &["default/bookinfo"])],
        ));
        g.listeners.push(listener(
            15090,
            90,
            vec![server(0, "HTTP", &["*"], &["default/bookinfo"])],
        ));
    });
    w.proxy
        .wait_for_line(
            "gateway listener bound on 0.0.0.0:8081",
            Duration::from_secs(5),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter(&w.metrics(), "mesh_gateway_listener_bind_failures_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the failed bind was never counted"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(
        code(&w, "bookinfo.example.com", 8081, "/productpage"),
        "200"
    );
    assert_eq!(
        code(&w, "bookinfo.example.com", 8080, "/productpage"),
        "200"
    );
    let lines = w.proxy.output_lines().to_vec();
    let bound_8080 = lines
        .iter()
        .filter(|l| l.contains("gateway listener bound on 0.0.0.0:8080"))
        .count();
    assert_eq!(bound_8080, 1, "8080 was rebound: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("gateway listener cannot bind") && l.contains(":15090")),
        "{lines:#?}"
    );

    // Removed: the port stops accepting.
    w.update(|g| g.listeners.retain(|l| l.port == 8080));
    let deadline = Instant::now() + Duration::from_secs(5);
    while code(&w, "bookinfo.example.com", 8081, "/productpage") != "000" {
        assert!(Instant::now() < deadline, "8081 still accepts");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(
        code(&w, "bookinfo.example.com", 8080, "/productpage"),
        "200"
    );

    // SIGTERM drains: a request in flight (the app answers after 1s) completes,
    // readiness fails at once, the process exits cleanly.
    let netns = w.client.netns().to_string();
    let url = format!("http://{}:8080/productpage?delay_ms=1000", w.ip());
    let slow = std::thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "curl",
                "-s",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
            ])
            .args([
                "-w",
                "%{http_code}",
                "-H",
                "host: bookinfo.example.com",
                &url,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    w.echo
        .wait_for_line("delay_ms=1000", Duration::from_secs(5))
        .unwrap();
    w.proxy.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let ready = http_code(&w.gw, &["http://127.0.0.1:15021/healthz/ready"]);
    assert!(
        ready == "503" || ready == "000",
        "ready while draining: {ready}"
    );
    assert_eq!(slow.join().unwrap(), "200");
    let status = w.proxy.wait(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn tcp_server_and_h2c_through_an_http2_server() {
    let mut w = gw_world(
        vec![
            listener(8081, 81, vec![server(0, "HTTP2", &["*"], &["default/h2"])]),
            listener(9000, 31400, vec![server(1, "TCP", &["*"], &["default/tcp"])]),
        ],
        &[
            ("default/h2", "hosts: ['*']\ngateways: [istio-system/ingress]\nhttp:\n- route: [{destination: {host: echo-h2, port: {number: 8080}}}]\n"),
            ("default/tcp", "hosts: ['*']\ngateways: [istio-system/ingress]\ntcp:\n- match: [{port: 31400}]\n  route: [{destination: {host: tcp-echo, port: {number: 9000}}}]\n"),
        ],
    );
    let script = format!(
        "exec 3<>/dev/tcp/{}/9000; echo ping >&3; read -r e <&3; echo $e",
        w.ip()
    );
    let out = w
        .client
        .exec(APP, &["timeout", "5", "bash", "-c", &script])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ping");

    let url = format!("http://{}:8081/h2", w.ip());
    let out = w
        .client
        .exec(APP, &["h2load", "-n", "200", "-c", "2", "-m", "10", &url])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("200 succeeded"), "{text}");
    let m = w.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[
                "source_workload=\"istio-ingressgateway\"",
                "destination_service=\"echo-h2.default.svc.cluster.local\"",
                "response_code=\"200\""
            ]
        ),
        200.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "istio_tcp_connections_opened_total",
            &[
                "destination_service=\"tcp-echo.default.svc.cluster.local\"",
                "source_workload=\"istio-ingressgateway\""
            ]
        ) >= 1.0,
        "{m}"
    );

    // Views swap under two open h2c connections: the port keeps its socket
    // and the connections keep serving (h2load opens exactly two).
    let netns = w.client.netns().to_string();
    let load = std::thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &netns, "h2load", "-n", "3000", "-c", "2", "-m", "1", &url,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    let ok = |w: &Gw| {
        metric_sum(
            &w.metrics(),
            "istio_requests_total",
            &["destination_service=\"echo-h2.default.svc.cluster.local\""],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while ok(&w) < 400.0 {
        assert!(Instant::now() < deadline, "h2load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    for port in [8082, 8083] {
        w.update(|g| {
            g.listeners.push(listener(
                port,
                port,
                vec![server(0, "HTTP", &["*"], &["default/h2"])],
            ))
        });
    }
    let after_swaps = ok(&w);
    let text = load.join().unwrap();
    assert!(text.contains("3000 succeeded, 0 failed"), "{text}");
    assert!(
        after_swaps < 3200.0,
        "the view swaps did not happen under load"
    );
}

#[test]
fn grpc_through_a_grpc_server_keeps_status_and_trailers() {
    let w = gw_world(
        vec![listener(8085, 85, vec![server(0, "GRPC", &["*"], &["default/grpc"])])],
        &[(
            "default/grpc",
            "hosts: ['*']\ngateways: [istio-system/ingress]\nhttp:\n- match: [{uri: {prefix: /mesh.Echo/}}]\n  route: [{destination: {host: grpc-echo, port: {number: 50051}}}]\n",
        )],
    );
    let py = python();
    let script = stage_script(&w.dir, "grpcecho.py");
    // As root: the tools venv may link a Python the app user cannot reach.
    let mut server = w.app.spawn(0, &[&py, &script, "server", "50051"]).unwrap();
    server
        .wait_for_line("grpcecho listening", Duration::from_secs(20))
        .unwrap();

    let target = format!("{}:8085", w.ip());
    let out = w
        .client
        .exec(0, &["timeout", "30", &py, &script, "client", &target, "50"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // 50 unary calls answered, and the failing call's status and message
    // (carried in trailers) reach the client unchanged.
    assert!(
        text.contains("OK 50"),
        "{text} {} {}",
        String::from_utf8_lossy(&out.stderr),
        w.metrics()
    );
    assert!(text.contains("STATUS 5 no such thing"), "{text}");

    let m = w.metrics();
    let calls = |status: &str| {
        metric_sum(
            &m,
            "istio_requests_total",
            &[
                "source_workload=\"istio-ingressgateway\"",
                "destination_service=\"grpc-echo.default.svc.cluster.local\"",
                "request_protocol=\"grpc\"",
                "response_code=\"200\"",
                &format!("grpc_response_status=\"{status}\""),
            ],
        )
    };
    assert_eq!(calls("0"), 50.0, "{m}");
    assert_eq!(calls("5"), 1.0, "{m}");
}

/// `httpsRedirect` on a server.
trait GatewayServerExt {
    fn redirect(self) -> Self;
}

impl GatewayServerExt for mesh_api::gatewayview::GatewayServer {
    fn redirect(mut self) -> Self {
        self.https_redirect = true;
        self
    }
}
