//! End-to-end tests of the pod harness itself: pods built by the real CNI plugins
//! talk over the bridge, processes run as the requested UID, errors are precise,
//! and nothing is left behind (also after a panic).

use std::time::Duration;

use mesh_e2e::echo::EchoReply;
use mesh_e2e::harness::{self, HarnessError, Node};
use serde_json::json;

const APP_UID: u32 = 1000;
const ECHO: &str = env!("CARGO_BIN_EXE_mesh-echo");

fn curl_json(client: &harness::Pod, extra: &[&str], url: &str) -> EchoReply {
    let mut argv = vec!["curl", "-sS", "--max-time", "5"];
    argv.extend_from_slice(extra);
    argv.push(url);
    let out = client.exec(APP_UID, &argv).expect("curl runs");
    assert!(
        out.status.success(),
        "curl {extra:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn two_pods_talk_http1_and_h2c_through_the_bridge() {
    let node = Node::new().unwrap();
    let server = node.add_pod("echo-v1-0", "shop").unwrap();
    let client = node.add_pod("client-0", "shop").unwrap();
    assert_ne!(server.ip(), client.ip());
    // The CNI result is the bridge plugin's, passed through the chain.
    assert_eq!(server.cni_result()["interfaces"][0]["name"], "cni0");

    let mut app = server
        .spawn(
            APP_UID,
            &[
                ECHO,
                "--port",
                "8080",
                "--pod",
                "echo-v1-0",
                "--namespace",
                "shop",
                "--service-account",
                "echo",
                "--labels",
                "app=echo,version=v1",
            ],
        )
        .unwrap();
    app.wait_for_line("mesh-echo listening", Duration::from_secs(10))
        .unwrap();
    let url = format!("http://{}:8080/a/b?x=1", server.ip());

    let r = curl_json(&client, &["-H", "end-user: jason"], &url);
    assert_eq!(r.pod, "echo-v1-0");
    assert_eq!(r.namespace, "shop");
    assert_eq!(r.service_account, "echo");
    assert_eq!(r.version.as_deref(), Some("v1"));
    assert_eq!(r.labels["app"], "echo");
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.as_str()),
        ("GET", "/a/b", "x=1")
    );
    assert_eq!(r.protocol, "HTTP/1.1");
    assert_eq!(r.headers["end-user"], "jason");
    let peer: std::net::SocketAddr = r.peer.parse().unwrap();
    assert_eq!(
        peer.ip(),
        client.ip(),
        "echo must see the client pod's address"
    );
    assert_eq!(r.local, format!("{}:8080", server.ip()));

    let r2 = curl_json(&client, &["--http2-prior-knowledge"], &url);
    assert_eq!(r2.protocol, "HTTP/2.0");
    assert_eq!(r2.pod, "echo-v1-0");
    assert_eq!(
        r2.peer.parse::<std::net::SocketAddr>().unwrap().ip(),
        client.ip()
    );
}

#[test]
fn echo_app_answers_status_and_tcp_with_banner() {
    let node = Node::new().unwrap();
    let server = node.add_pod("tcp-0", "default").unwrap();
    let client = node.add_pod("client-0", "default").unwrap();
    let mut app = server
        .spawn(
            APP_UID,
            &[
                ECHO,
                "--port",
                "80",
                "--tcp-port",
                "9000",
                "--banner",
                "HELLO",
            ],
        )
        .unwrap();
    app.wait_for_line("mesh-echo listening", Duration::from_secs(10))
        .unwrap();
    // Status shaping (later tests use it for flaky endpoints).
    let out = client
        .exec(
            APP_UID,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{}/?status=503", server.ip()),
            ],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503");
    // Server-first TCP: banner, then echo.
    let script = format!(
        "exec 3<>/dev/tcp/{}/9000; read -r b <&3; echo ping >&3; read -r e <&3; echo \"$b|$e\"",
        server.ip()
    );
    let out = client
        .exec(APP_UID, &["timeout", "5", "bash", "-c", &script])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "HELLO|ping");
}

#[test]
fn processes_run_as_the_requested_uid() {
    let node = Node::new().unwrap();
    let pod = node.add_pod("uid-0", "default").unwrap();
    for uid in [0u32, 1000, 1337] {
        let out = pod.exec(uid, &["id", "-u"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), uid.to_string());
        let out = pod.exec(uid, &["id", "-g"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), uid.to_string());
    }
    // Inside the pod only lo and eth0 exist.
    let out = pod.exec(0, &["ip", "-o", "link", "show"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("eth0@"), "{text}");
}

fn leftovers(prefix: &str) -> Vec<String> {
    harness::netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn nothing_is_left_behind_even_after_a_panic() {
    let links_before = harness::link_names().unwrap();
    let id = std::sync::Mutex::new(String::new());
    let state = std::sync::Mutex::new(std::path::PathBuf::new());
    let result = std::panic::catch_unwind(|| {
        let node = Node::new().unwrap();
        *id.lock().unwrap() = node.id().to_string();
        let a = node.add_pod("a", "default").unwrap();
        let _b = node.add_pod("b", "default").unwrap();
        let _p = a.spawn(APP_UID, &[ECHO, "--port", "8080"]).unwrap();
        *state.lock().unwrap() = std::env::temp_dir().join(format!("{}-state", node.id()));
        assert!(state.lock().unwrap().exists());
        assert_eq!(
            leftovers(node.id()).len(),
            3,
            "node + two pods exist while running"
        );
        panic!("test body panics with live pods");
    });
    assert!(result.is_err());
    let id = id.into_inner().unwrap();
    assert!(!id.is_empty());
    assert_eq!(
        leftovers(&id),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    assert!(
        !state.into_inner().unwrap().exists(),
        "state dir left behind"
    );
    assert_eq!(
        harness::link_names().unwrap(),
        links_before,
        "host links changed"
    );
}

#[test]
fn a_failing_plugin_is_reported_precisely_and_undone() {
    // A chained plugin that fails on ADD: `tuning` asked to set a sysctl that does
    // not exist. The bridge before it succeeded, so it must be undone too.
    let node = Node::builder()
        .chain_plugin(json!({
            "type": "tuning",
            "sysctl": {"net.ipv4.conf.eth0.no_such_knob": "1"}
        }))
        .build()
        .unwrap();
    let err = match node.add_pod("broken-0", "default") {
        Ok(_) => panic!("ADD through a broken chain must fail"),
        Err(e) => e,
    };
    let HarnessError::Cni(cni) = &err else {
        panic!("expected a CNI error, got {err}");
    };
    let msg = err.to_string();
    assert!(cni.plugin.ends_with("/tuning"), "{msg}");
    assert_eq!(cni.command, "ADD");
    assert!(
        msg.contains(&format!("{}-p0", node.id())),
        "names the netns: {msg}"
    );
    assert!(
        msg.contains("no_such_knob"),
        "carries the plugin's message: {msg}"
    );
    // The pod namespace was removed; only the node's own remains.
    assert_eq!(leftovers(node.id()), vec![node.netns().to_string()]);

    // A plugin type that does not exist is refused before anything is created.
    let err = Node::builder()
        .chain_plugin(json!({"type": "definitely-missing"}))
        .build()
        .err()
        .expect("missing plugin is an error");
    assert!(err.to_string().contains("definitely-missing"), "{err}");
}

#[test]
fn cni_protocol_errors_are_parsed() {
    // Calling a real plugin with a config it rejects yields its CNI error object.
    let inv = harness::cni::Invocation {
        plugin: "/usr/lib/cni/bridge".into(),
        command: "ADD".into(),
        container_id: "x".into(),
        netns: "/var/run/netns/does-not-exist".into(),
        ifname: "eth0".into(),
        args: String::new(),
        path: vec!["/usr/lib/cni".into()],
        run_in_netns: None,
    };
    let err = harness::cni::invoke(
        &inv,
        &json!({"cniVersion": "9.9.9", "name": "x", "type": "bridge"}),
    )
    .unwrap_err();
    assert_eq!(
        err.code,
        Some(1),
        "incompatible CNI version is code 1: {err}"
    );
    assert!(err.to_string().contains("9.9.9"), "{err}");
}
