//! Config the proxy cannot use is refused loudly, and what it ran before stays:
//!
//! - over the sync stream, the proxy's own apply path (`source::follow_agent`,
//!   in process, against a loopback peer speaking the agent's protocol) NACKs a
//!   view with an uncompilable VirtualService, naming the resource, field and
//!   value; the agent's tracker turns that into proxy-status `ERROR`;
//! - a real sidecar fed a refused view keeps routing by the previous
//!   VirtualService, and its config dump and metrics show the refusal;
//! - a real agent refuses, at validation, the `(?x)` regex a sidecar could not
//!   compile, so no proxy is ever sent it.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use mesh_agent::protocol::{decode, encode, framed};
use mesh_agent::server::tracker::Tracker;
use mesh_api::networking::VirtualServiceSpec;
use mesh_api::syncapi::{AgentMessage, ClientMessage};

const HOST: &str = "echo.default.svc.cluster.local";

/// `/old` is aborted with 418 by the good VirtualService: a visible effect.
const GOOD_VS: &str = "hosts: [echo]\nhttp:\n- match: [{uri: {exact: /old}}]\n  fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n  route: [{destination: {host: echo}}]\n- route: [{destination: {host: echo}}]\n";

/// The same host with a regex the proxy cannot compile in its anchored form.
const BAD_VS: &str = "hosts: [echo]\nhttp:\n- match: [{uri: {regex: \"(?x)/never # a comment\"}}]\n  route: [{destination: {host: echo}}]\n";

fn vs(yaml: &str) -> VirtualServiceSpec {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn proxy_config() -> mesh_proxy::config::Config {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        args: mesh_proxy::config::Args,
    }
    Flags::parse_from([
        "mesh-proxy",
        "--agent",
        "127.0.0.1:1",
        "--pod",
        "client-0",
        "--namespace",
        "default",
    ])
    .args
    .validate()
    .unwrap()
}

fn view(version: u64, vs_yaml: &str) -> ProxyView {
    let mut v = ProxyView {
        version,
        services: vec![svc(
            HOST,
            VIP,
            8080,
            "http",
            "HTTP",
            &[("10.0.0.9".parse().unwrap(), "v1")],
        )
        .into()],
        ..Default::default()
    };
    v.virtual_services
        .insert("default/echo".into(), vs(vs_yaml));
    v
}

#[tokio::test]
async fn an_uncompilable_view_is_nacked_with_the_resource_and_the_last_good_one_stays() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shared = mesh_proxy::shared::Shared::new(proxy_config());
    let shutdown = tokio_util::sync::CancellationToken::new();
    mesh_proxy::source::follow_agent(
        addr,
        mesh_agent::client::Transport::Plaintext,
        shared.clone(),
        shutdown.clone(),
    );
    let exchange = async {
        let (sock, _) = listener.accept().await.unwrap();
        let mut io = framed(sock);
        let next = |frame: Option<Result<bytes::BytesMut, _>>| -> ClientMessage {
            decode(&frame.expect("stream open").expect("frame")).unwrap()
        };
        let identity = match next(io.next().await) {
            ClientMessage::Subscribe { identity, .. } => identity,
            other => panic!("expected Subscribe, got {other:?}"),
        };
        // The agent's own tracker: what /debug/syncz and proxy-status show.
        let tracker = Tracker::default();
        let id = tracker.connect(identity, None);
        for (version, yaml) in [(1, GOOD_VS), (2, BAD_VS)] {
            io.send(encode(&AgentMessage::View {
                agent: "test".into(),
                view: view(version, yaml),
            }))
            .await
            .unwrap();
            tracker.sent(id, version);
            match next(io.next().await) {
                ClientMessage::Ack { version } => tracker.ack(id, version),
                ClientMessage::Nack { version, reason } => tracker.nack(id, version, reason),
                other => panic!("expected ACK/NACK, got {other:?}"),
            }
        }
        tracker.statuses("test")
    };
    let rows = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the proxy answered both views");
    shutdown.cancel();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.status.as_str(), row.version_sent, row.version_acked),
        ("ERROR", Some(2), Some(1)),
        "{row:?}"
    );
    assert_eq!(
        row.reason.as_deref(),
        Some(
            "version 2 cannot be applied: VirtualService/default/echo: http[0].match[0].uri: \
             invalid regex \"(?x)/never # a comment\": flag x is not RE2 syntax (the flags are i, m, s and U)"
        )
    );
    // Version 1 still runs, with its route; the refusal is kept for the config dump.
    let snap = shared.store.load().unwrap();
    assert_eq!(snap.version, 1);
    assert!(snap.routes.for_host(HOST).is_some());
    assert_eq!(shared.store.rejected().map(|r| r.version), Some(2));
    assert!(shared
        .metrics
        .render()
        .contains("mesh_proxy_config_rejected_total 1\n"));
}

fn status_of(w: &World, path: &str) -> String {
    http_code(&w.client, &[&format!("http://{VIP}:8080{path}")])
}

fn config_dump(pod: &Pod) -> serde_json::Value {
    let out = pod
        .exec(0, &["curl", "-s", "http://127.0.0.1:15000/config_dump"])
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn a_refused_view_keeps_the_previous_virtual_service_in_force() {
    let mut w = world(1, "ALLOW_ANY");
    w.update(|v| {
        v.virtual_services
            .insert("default/echo".into(), vs(GOOD_VS));
    });
    w.wait_applied();
    assert_eq!(status_of(&w, "/old"), "418");
    let good = w.view.version;

    w.update(|v| {
        v.virtual_services.insert("default/echo".into(), vs(BAD_VS));
    });
    let bad = w.view.version;
    // Positive signal: the client's config dump reports the refused version.
    let deadline = Instant::now() + Duration::from_secs(10);
    let dump = loop {
        let d = config_dump(&w.client);
        if d["rejected"]["version"] == bad {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "version {bad} never refused: {d}"
        );
        std::thread::sleep(Duration::from_millis(30));
    };
    assert_eq!(dump["version"], good, "{dump}");
    assert_eq!(
        dump["rejected"]["errors"][0]["resource"], "VirtualService/default/echo",
        "{dump}"
    );
    let why = dump["rejected"]["errors"][0]["error"]
        .as_str()
        .unwrap_or("");
    assert!(
        why.starts_with("http[0].match[0].uri: invalid regex \"(?x)/never # a comment\""),
        "{dump}"
    );
    // The previous VirtualService keeps applying.
    assert_eq!(status_of(&w, "/old"), "418");
    let m = metrics(&w.client);
    assert_eq!(
        metric_sum_plain(&m, "mesh_proxy_config_rejected_total"),
        1.0,
        "{m}"
    );
    // `meshctl proxy-config` reads the same dump and says so.
    let meshctl = mesh_e2e::bins::workspace_bin("meshctl");
    let out = w
        .client
        .exec(
            0,
            &[
                meshctl.to_str().unwrap(),
                "proxy-config",
                "route",
                "127.0.0.1:15000",
            ],
        )
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("refused config version {bad}"))
            && err.contains("VirtualService/default/echo: http[0].match[0].uri"),
        "{err}"
    );
}

/// A metric without labels.
fn metric_sum_plain(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{name} ")))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// A VirtualService document for the agent's folder.
fn vs_doc(spec_yaml: &str) -> String {
    let spec: String = spec_yaml.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: echo\n  namespace: default\nspec:\n{spec}"
    )
}

#[test]
fn the_agent_refuses_the_regex_a_sidecar_could_not_compile() {
    let node = Node::new().unwrap();
    let client = node.add_pod("client-0", "default").unwrap();
    let v1 = node.add_pod("echo-v1-0", "default").unwrap();
    let dir = ViewDir::new();
    write(&dir.0, "service.yaml", ECHO_SERVICE);
    let labels = [("app", "echo"), ("version", "v1")];
    let pods = [
        pod_yaml(
            "client-0",
            &client.ip().to_string(),
            "default",
            &[("app", "client")],
        ),
        pod_yaml("echo-v1-0", &v1.ip().to_string(), "default", &labels),
    ];
    write(&dir.0, "pods.yaml", pods.join("---\n"));
    write(&dir.0, "vs.yaml", vs_doc(GOOD_VS));
    let _agent = start_agent(&node, &dir.0, &[]);
    let listen = agent_addr();
    redirect(&v1);
    let _echo = start_echo(&v1, "v1");
    let _p1 = start_proxy_with(&v1, "app=echo,version=v1", &["--agent", &listen]);
    redirect(&client);
    let _p2 = start_proxy_with(&client, "app=client", &["--agent", &listen]);
    let code = |path: &str| http_code(&client, &[&format!("http://10.96.0.20:8080{path}")]);
    assert_eq!(code("/old"), "418");

    write(&dir.0, "vs.yaml", vs_doc(BAD_VS));
    // Positive signal: the agent lists the VirtualService as rejected, with
    // the field and the reason, and every proxy is in sync with the agent's
    // newest version (none was sent anything it would refuse).
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = agent_syncz(&node);
        let rejected = s["rejected"].as_array().cloned().unwrap_or_default();
        let refused = rejected.iter().any(|r| {
            r["resource"] == "VirtualService/default/echo"
                && r["errors"][0].as_str().is_some_and(|e| {
                    e.contains("spec.http[0].match[0].uri.regex")
                        && e.contains("flag x is not RE2 syntax")
                })
        });
        let proxies = s["proxies"].as_array().cloned().unwrap_or_default();
        let synced = proxies.len() == 2
            && proxies
                .iter()
                .all(|p| p["status"] == "SYNCED" && p["versionAcked"] == s["version"]);
        if refused && synced {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "never refused at validation: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        s["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["reason"].is_null()),
        "{s}"
    );
}
