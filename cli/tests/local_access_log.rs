//! Access logs as the mesh config asks (`accessLogFile`, `accessLogEncoding`,
//! `accessLogFormat`), read back with `meshctl local logs POD -c istio-proxy`:
//! Envoy's default line per request, JSON lines, a custom format, each applied
//! live when the mesh config changes; a format with an unknown operator is
//! refused naming the operator, and on a live edit the last good one stays.

mod common;

use std::time::{Duration, Instant};

use common::*;

const APPS: &str = SHOP_WEB_AND_CLIENT;

const CLIENT: &str = "shop/client-0";
const WEB: &str = "shop/web-0";

fn lines(mesh: &Local, pod: &str, needle: &str, n: usize) -> Vec<String> {
    mesh.proxy_log_lines(pod, needle, n)
}

/// Rewrites the mesh config the agent watches and waits until `pods` run a
/// newer config version.
fn edit_mesh(mesh: &Local, yaml: &str, pods: &[&str]) {
    mesh.changed_by(yaml, pods, || {
        std::fs::write(mesh.root.join(&mesh.name).join("mesh.yaml"), yaml).unwrap()
    });
}

#[test]
fn access_log_follows_the_mesh_config() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    let cfg = mesh.file("mesh.yaml", "accessLogFile: /dev/stdout\n");
    mesh.ok(&["up", "--mesh-config", &cfg, "-f", &apps]);

    // Envoy's default line, on both sides of the call.
    let res = mesh.calls(CLIENT, "http://web.shop:80/text", 3, &[]);
    assert!(res.iter().all(|(c, _)| *c == 200), "{res:?}");
    for (pod, cluster) in [
        (CLIENT, "outbound|80||web.shop.svc.cluster.local"),
        (WEB, "inbound|8080||"),
    ] {
        for l in lines(&mesh, pod, "\"GET /text?call=", 3) {
            assert!(
                l.starts_with('[') && l.contains("Z] \"GET /text?call="),
                "{l}"
            );
            assert!(l.contains(" HTTP/1.1\" 200 "), "{l}");
            assert!(l.contains(&format!("\" {cluster} ")), "{l}");
        }
    }

    // JSON encoding, live: one parseable object per request.
    edit_mesh(
        &mesh,
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
        &[CLIENT, WEB],
    );
    mesh.calls(CLIENT, "http://web.shop:80/json", 2, &[]);
    for l in lines(&mesh, CLIENT, "/json?call=", 2) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["method"], "GET", "{l}");
        assert_eq!(v["response_code"], 200, "{l}");
        assert_eq!(
            v["upstream_cluster"],
            "outbound|80||web.shop.svc.cluster.local"
        );
    }

    // A custom format, live.
    let custom = "accessLogFile: /dev/stdout\n\
                  accessLogFormat: \"ALOG %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %ROUTE_NAME% %UPSTREAM_CLUSTER%\\n\"\n";
    edit_mesh(&mesh, custom, &[CLIENT]);
    mesh.calls(CLIENT, "http://web.shop:80/custom", 2, &[]);
    let got = lines(&mesh, CLIENT, "ALOG ", 2);
    assert_eq!(
        got[0],
        "ALOG GET /custom?call=1 200 - outbound|80||web.shop.svc.cluster.local"
    );

    // An unknown operator: the agent refuses the edit naming it, and the last
    // good format stays in force.
    let agent_log = || {
        std::fs::read_to_string(mesh.root.join(&mesh.name).join("logs/mesh-agent.log"))
            .unwrap_or_default()
    };
    std::fs::write(
        mesh.root.join(&mesh.name).join("mesh.yaml"),
        "accessLogFile: /dev/stdout\naccessLogFormat: \"%START_TIME% %NO_SUCH_OP%\"\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent_log().contains("%NO_SUCH_OP%") {
        assert!(Instant::now() < deadline, "{}", agent_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    mesh.calls(CLIENT, "http://web.shop:80/after", 1, &[]);
    assert_eq!(
        lines(&mesh, CLIENT, "ALOG GET /after", 1)[0],
        "ALOG GET /after?call=1 200 - outbound|80||web.shop.svc.cluster.local"
    );
}

#[test]
fn unknown_operator_is_refused_at_up() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    let cfg = mesh.file(
        "mesh.yaml",
        "accessLogFile: /dev/stdout\naccessLogFormat: \"%DURATION% %BOGUS%\"\n",
    );
    let out = mesh.meshctl(&["up", "--mesh-config", &cfg, "-f", &apps]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("accessLogFormat") && err.contains("%BOGUS%"),
        "{err}"
    );
}
