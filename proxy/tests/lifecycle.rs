//! Snapshot updates and shutdown under load: an endpoint removed from the view
//! stops receiving requests without a failed request, SIGTERM drains with zero
//! client-visible errors, `/quitquitquit` exits promptly, readiness follows the
//! first snapshot and the drain.

mod common;

use common::*;

/// Runs h2load (HTTP/1.1, 4 connections) for `secs` at `rate` requests/s per
/// connection in the client pod; returns its stdout.
fn load(w: &World, secs: u32) -> std::thread::JoinHandle<String> {
    let netns = w.client.netns().to_string();
    let url = format!("http://{VIP}:8080/load");
    std::thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "setpriv",
                "--reuid=1000",
                "--regid=1000",
                "--clear-groups",
                "--",
            ])
            .args(["h2load", "--h1", "-c", "4", "-D", &secs.to_string(), &url])
            .output()
            .expect("h2load runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

fn assert_clean(out: &str) {
    let line = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_default();
    assert!(
        line.contains(" 0 failed, 0 errored"),
        "client saw failures: {out}"
    );
    let codes = out
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_default();
    assert!(codes.contains(" 0 5xx"), "client saw 5xx: {out}");
    let done: u64 = line
        .split(',')
        .find(|p| p.contains("succeeded"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(done > 100, "too few requests completed: {out}");
}

fn inbound_total(pod: &Pod) -> f64 {
    metric_sum(
        &metrics(pod),
        "istio_requests_total",
        &["reporter=\"destination\""],
    )
}

#[test]
fn removed_endpoint_then_sigterm_loses_no_request() {
    let mut w = world(2, "ALLOW_ANY");
    let h = load(&w, 4);
    // Let traffic reach both endpoints first.
    let deadline = Instant::now() + Duration::from_secs(5);
    while inbound_total(&w.servers[1]) < 20.0 {
        assert!(Instant::now() < deadline, "server 2 never got traffic");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Scale down: the endpoint leaves the view, then its pod gets SIGTERM, as
    // Kubernetes does concurrently.
    let gone = w.servers[1].ip().to_string();
    w.update(|v| {
        for s in &mut v.services {
            std::sync::Arc::make_mut(s)
                .endpoints
                .retain(|e| e.address != gone);
        }
    });
    // The client stops picking it once it runs the new view.
    w.wait_applied();
    w.server_procs[1]
        .1
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = w.server_procs[1].1.wait(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "proxy exit after drain: {status:?}");
    let out = h.join().unwrap();
    assert_clean(&out);
    // The remaining endpoint took the rest.
    assert!(inbound_total(&w.servers[0]) > 50.0);
}

#[test]
fn readiness_drain_and_quitquitquit() {
    // A long drain grace: after /drain the pod is unready but still serving.
    let mut w = world_with(1, "ALLOW_ANY", &["--drain-grace", "30s"]);
    let server = w.servers.remove(0);
    let code = |path: &str, method: &str| {
        let out = server
            .exec(
                0,
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-X",
                    method,
                    &format!("http://127.0.0.1{path}"),
                ],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(code(":15021/healthz/ready", "GET"), "200");
    assert_eq!(code(":15020/healthz/ready", "GET"), "200");
    // The admin endpoint answers on loopback only.
    let dump = server
        .exec(0, &["curl", "-s", "http://127.0.0.1:15000/config_dump"])
        .unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    assert_eq!(dump["version"], 1);
    let external = w
        .client
        .exec(
            0,
            &[
                "curl",
                "-sf",
                "-m",
                "2",
                &format!("http://{}:15000/config_dump", server.ip()),
            ],
        )
        .unwrap();
    assert!(
        !external.status.success()
            && !String::from_utf8_lossy(&external.stdout).contains("\"view\""),
        "admin must not be reachable from outside the pod: {}",
        String::from_utf8_lossy(&external.stdout)
    );
    // Another pod may read the status port but not drain or stop the sidecar
    // (Istio's agent: localhost only); each refusal is logged with the caller.
    for path in ["/quitquitquit", "/drain"] {
        let out = w
            .client
            .exec(
                0,
                &[
                    "curl",
                    "-s",
                    "-m",
                    "2",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-X",
                    "POST",
                    &format!("http://{}:15020{path}", server.ip()),
                ],
            )
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "{path}");
        let line = w.server_procs[0]
            .1
            .wait_for_line(&format!("request {path} refused"), Duration::from_secs(5))
            .unwrap();
        assert!(
            line.contains("caller") && line.contains(&format!("{}:", w.client.ip())),
            "{line}"
        );
    }
    let refusals = w.server_procs[0]
        .1
        .output_lines()
        .iter()
        .filter(|l| l.contains("only allowed from localhost"))
        .count();
    assert_eq!(refusals, 2);
    assert_eq!(code(":15021/healthz/ready", "GET"), "200");
    // /drain from the pod itself: not ready any more, still serving.
    assert_eq!(code(":15020/drain", "POST"), "200");
    assert_eq!(code(":15021/healthz/ready", "GET"), "503");
    let r = curl_echo(&w.client, &[&format!("http://{VIP}:8080/")]);
    assert_eq!(r.pod, server.name());
    // /quitquitquit: exits promptly.
    let t = Instant::now();
    assert_eq!(code(":15020/quitquitquit", "POST"), "200");
    let status = w.server_procs[0].1.wait(Duration::from_secs(3)).unwrap();
    assert!(status.success());
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn bad_view_keeps_the_last_good_snapshot() {
    let w = world(1, "ALLOW_ANY");
    std::fs::write(w.dir.0.join("view.json"), b"{ not json").unwrap();
    // Wait for the client proxy to have read and refused it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rejected = || {
        metrics(&w.client)
            .lines()
            .find_map(|l| l.strip_prefix("mesh_proxy_config_rejected_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    while rejected() < 1 {
        assert!(Instant::now() < deadline, "the bad view was never refused");
        std::thread::sleep(Duration::from_millis(30));
    }
    let r = curl_echo(&w.client, &[&format!("http://{VIP}:8080/")]);
    assert_eq!(
        r.pod,
        w.servers[0].name(),
        "last good snapshot still routes"
    );
    let dump = w
        .client
        .exec(0, &["curl", "-s", "http://127.0.0.1:15000/config_dump"])
        .unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    assert_eq!(dump["version"], 1);
}

#[test]
fn app_probes_run_through_the_status_port() {
    let node = Node::new().unwrap();
    let pod = node.add_pod("probed-0", "default").unwrap();
    let dir = ViewDir::new();
    let path = dir.write(&ProxyView {
        version: 1,
        ..Default::default()
    });
    let _echo = start_echo(&pod, "v1");
    let probers = r#"{"/app-health/app/livez":{"httpGet":{"path":"/healthz","port":8080}},"/app-health/app/readyz":{"tcpSocket":{"port":9000}},"/app-health/app/startupz":{"httpGet":{"path":"/x?status=500","port":8080}}}"#;
    let proxy = env!("CARGO_BIN_EXE_mesh-proxy");
    let mut p = pod
        .spawn(
            PROXY,
            &[
                "env",
                &format!("ISTIO_KUBE_APP_PROBERS={probers}"),
                proxy,
                "--view-file",
                path.to_str().unwrap(),
            ],
        )
        .unwrap();
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(10))
        .unwrap();
    wait_ready(&pod);
    let code = |path: &str| {
        let out = pod
            .exec(
                0,
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &format!("http://{}:15020{path}", pod.ip()),
                ],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(code("/app-health/app/livez"), "200");
    assert_eq!(code("/app-health/app/readyz"), "200");
    assert_eq!(
        code("/app-health/app/startupz"),
        "503",
        "the app answered 500"
    );
    assert_eq!(code("/app-health/other/livez"), "404");
}

#[test]
fn status_port_merges_the_apps_metrics() {
    let node = Node::new().unwrap();
    let pod = node.add_pod("metrics-0", "default").unwrap();
    let dir = ViewDir::new();
    let path = dir.write(&ProxyView {
        version: 1,
        ..Default::default()
    });
    // The echo app answers every path with JSON; its "metrics" are that text.
    let _echo = start_echo(&pod, "v1");
    let proxy = env!("CARGO_BIN_EXE_mesh-proxy");
    let ann =
        r#"ISTIO_PROMETHEUS_ANNOTATIONS={"scrape":"true","port":"8080","path":"/app-metrics"}"#;
    let mut p = pod
        .spawn(
            PROXY,
            &["env", ann, proxy, "--view-file", path.to_str().unwrap()],
        )
        .unwrap();
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(10))
        .unwrap();
    wait_ready(&pod);
    let out = pod
        .exec(
            0,
            &[
                "curl",
                "-s",
                &format!("http://{}:15020/stats/prometheus", pod.ip()),
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# TYPE istio_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains("\"path\":\"/app-metrics\""),
        "the app's answer is appended: {text}"
    );
    // 15090 stays the sidecar's own.
    let own = pod
        .exec(
            0,
            &["curl", "-s", "http://127.0.0.1:15090/stats/prometheus"],
        )
        .unwrap();
    assert!(!String::from_utf8_lossy(&own.stdout).contains("app-metrics"));
}
