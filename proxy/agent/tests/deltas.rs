//! Incremental pushes over the real agent and its files source: a proxy that
//! subscribes with `deltas` gets a full view first, then, when one service's
//! endpoints change, a delta with that service alone, which rebuilds exactly
//! the full view another stream (without `deltas`) receives at that version;
//! a proxy of another namespace gets nothing (its stream is not even woken)
//! and still gets the host it looks up later, one there that looked the
//! service up gets the change;
//! a change outside the services (a VirtualService) comes as a full view; the
//! client library ends with the same view; `/metrics` counts both kinds and
//! their bytes. And the client library against a fake agent sending a delta
//! on the wrong base: the stream ends and the next one starts from a full view.

mod common;

use common::counter;
use mesh_agent::config::Config;
use mesh_api::syncapi::{AgentMessage, ClientMessage, ProxyIdentity, ProxyView};
use mesh_api::syncdelta::{self, ViewDelta};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const MESH: &str = include_str!("fixtures/mesh.yaml");
const SERVICES: usize = 20;

/// `SERVICES` Services of namespace `shop` with two endpoints each; service 7's
/// second endpoint is `last`.
fn many(last: &str) -> String {
    let mut y = String::new();
    for i in 0..SERVICES {
        let second = if i == 7 {
            last.to_string()
        } else {
            format!("10.9.{i}.2")
        };
        write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: shop}}\n\
             spec: {{clusterIP: 10.96.9.{i}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc-{i}-a, namespace: shop, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\n\
             endpoints:\n- addresses: [10.9.{i}.1]\n  conditions: {{ready: true}}\n\
             - addresses: [{second}]\n  conditions: {{ready: true}}\n---\n"
        )
        .unwrap();
    }
    y
}

fn web(pod: &str) -> ProxyIdentity {
    in_ns(pod, "shop")
}

fn in_ns(pod: &str, namespace: &str) -> ProxyIdentity {
    ProxyIdentity {
        pod: pod.into(),
        namespace: namespace.into(),
        service_account: "default".into(),
        ..Default::default()
    }
}

async fn subscribe(addr: SocketAddr, pod: &str, deltas: bool) -> TcpStream {
    subscribe_as(addr, web(pod), deltas).await
}

async fn send(s: &mut TcpStream, m: &ClientMessage) {
    let b = serde_json::to_vec(m).unwrap();
    s.write_all(&(b.len() as u32).to_be_bytes()).await.unwrap();
    s.write_all(&b).await.unwrap();
}

async fn subscribe_as(addr: SocketAddr, identity: ProxyIdentity, deltas: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let m = ClientMessage::Subscribe {
        identity,
        last_version: None,
        token: None,
        requested: vec![],
        deltas,
    };
    let b = serde_json::to_vec(&m).unwrap();
    s.write_all(&(b.len() as u32).to_be_bytes()).await.unwrap();
    s.write_all(&b).await.unwrap();
    s
}

/// The next message and its size on the wire.
async fn recv(s: &mut TcpStream) -> (AgentMessage, usize) {
    let read = async {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut b).await.unwrap();
        (serde_json::from_slice(&b).unwrap(), b.len())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a message within 10s")
}

/// What arrived: a full view or a delta (with its wire size).
enum Got {
    Full(usize),
    Delta(ViewDelta, usize),
}

/// Reads messages until the stream's view (deltas applied to `view`) has
/// `until`; returns how the last one came.
async fn follow(
    s: &mut TcpStream,
    view: &mut ProxyView,
    until: impl Fn(&ProxyView) -> bool,
) -> Got {
    loop {
        let got = match recv(s).await {
            (AgentMessage::View { view: v, .. }, n) => {
                *view = v;
                Got::Full(n)
            }
            (AgentMessage::Delta { delta, .. }, n) => {
                *view = syncdelta::apply(view, &delta).unwrap();
                Got::Delta(delta, n)
            }
            (other, _) => panic!("expected a view, got {other:?}"),
        };
        if until(view) {
            return got;
        }
    }
}

fn endpoints_of(v: &ProxyView, host: &str) -> Vec<String> {
    v.services
        .iter()
        .find(|s| s.hostname == host)
        .map(|s| s.endpoints.iter().map(|e| e.address.clone()).collect())
        .unwrap_or_default()
}

async fn agent(dir: &Path, shutdown: &CancellationToken) -> mesh_agent::agent::Running {
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    std::fs::write(dir.join("many.yaml"), many("10.9.7.2")).unwrap();
    let cfg = Config::from_flags([
        "--config-dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--debug-listen",
        "127.0.0.1:0",
    ])
    .unwrap();
    common::start_files_agent(&cfg, dir, shutdown).await
}

const SVC7: &str = "svc-7.shop.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_change_is_a_delta_of_one_service() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let agent = agent(dir.path(), &shutdown).await;
    let ready = |v: &ProxyView| v.services.len() > SERVICES;
    let mut d = subscribe(agent.sync_addr, "web-1", true).await;
    let mut f = subscribe(agent.sync_addr, "web-2", false).await;
    let (mut dv, mut fv) = (ProxyView::default(), ProxyView::default());
    let Got::Full(full_bytes) = follow(&mut d, &mut dv, ready).await else {
        panic!("the first message of a stream must be a full view");
    };
    follow(&mut f, &mut fv, ready).await;
    // Two proxies of another namespace: one never calls shop, one looked svc-7 up.
    let mut o = subscribe_as(agent.sync_addr, in_ns("stock-1", "inventory"), true).await;
    let mut ov = ProxyView::default();
    follow(&mut o, &mut ov, |v| v.version > 0).await;
    let mut l = subscribe_as(agent.sync_addr, in_ns("stock-2", "inventory"), true).await;
    let mut lv = ProxyView::default();
    follow(&mut l, &mut lv, |v| v.version > 0).await;
    send(
        &mut l,
        &ClientMessage::Lookup {
            target: SVC7.into(),
        },
    )
    .await;
    follow(&mut l, &mut lv, |v| !endpoints_of(v, SVC7).is_empty()).await;
    assert!(matches!(
        recv(&mut l).await.0,
        AgentMessage::Lookup { host: Some(_), .. }
    ));
    assert!(endpoints_of(&ov, SVC7).is_empty());
    let client = mesh_agent::client::spawn_client(
        mesh_agent::client::ClientConfig::new(agent.sync_addr.to_string(), web("web-3")),
        |_: &ProxyView| Ok(()),
        shutdown.clone(),
    );

    // One endpoint of svc-7 changes.
    std::fs::write(dir.path().join("many.yaml"), many("10.9.7.99")).unwrap();
    let moved = |v: &ProxyView| endpoints_of(v, SVC7).contains(&"10.9.7.99".to_string());
    let got = follow(&mut d, &mut dv, moved).await;
    follow(&mut f, &mut fv, |v| v.version >= dv.version && moved(v)).await;
    let Got::Delta(delta, delta_bytes) = got else {
        panic!("an endpoint change must come as a delta");
    };
    let hosts: Vec<&str> = delta.upsert.iter().map(|s| s.hostname.as_str()).collect();
    assert_eq!(hosts, [SVC7]);
    assert!(delta.remove.is_empty());
    assert_eq!(dv.version, fv.version);
    assert_eq!(dv, fv, "the delta rebuilds the full view of that version");
    assert!(
        delta_bytes * 10 < full_bytes,
        "delta {delta_bytes} bytes vs full view {full_bytes} bytes"
    );
    // The client library applies the same deltas and ends with the same view.
    mesh_e2e::wait::eventually(
        "client at the new version",
        Duration::from_secs(10),
        async || {
            client
                .state
                .borrow()
                .current
                .as_ref()
                .is_some_and(|v| v.version >= fv.version && moved(v))
        },
    )
    .await;
    let cv = client.state.borrow().current.clone().unwrap();
    assert_eq!(cv.services, fv.services);
    // Looked up from the other namespace: the change itself.
    match follow(&mut l, &mut lv, moved).await {
        Got::Delta(d, _) => assert_eq!(d.upsert.len(), 1),
        Got::Full(_) => panic!("expected a delta"),
    }
    // Not in the other namespace's view: that stream is not even woken. The
    // next message it gets (the VirtualService's version, below) starts from
    // the version it had before the endpoint change.
    let before = ov.clone();

    // A VirtualService is not a service change: a full view.
    std::fs::write(
        dir.path().join("vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: svc-3, namespace: shop}\n\
         spec: {hosts: [svc-3], http: [{timeout: 2s, route: [{destination: {host: svc-3}}]}]}\n",
    )
    .unwrap();
    let routed = |v: &ProxyView| v.virtual_services.contains_key("shop/svc-3");
    assert!(matches!(
        follow(&mut d, &mut dv, routed).await,
        Got::Full(_)
    ));
    follow(&mut f, &mut fv, |v| v.version >= dv.version && routed(v)).await;
    assert_eq!(dv, fv);
    match follow(&mut o, &mut ov, |v| v.version >= dv.version).await {
        Got::Delta(d, _) => assert_eq!(
            d.base, before.version,
            "the other namespace's proxy was sent the endpoint change's version"
        ),
        Got::Full(_) => panic!("an untouched view must not be sent whole"),
    }
    assert_eq!(ov.services, before.services);

    // Another endpoint change the other namespace's proxy is not woken for,
    // then it looks a host up: its stream is a version behind, and its view
    // must still be built with the new host (not answered with the version).
    std::fs::write(dir.path().join("many.yaml"), many("10.9.7.98")).unwrap();
    let moved_again = |v: &ProxyView| endpoints_of(v, SVC7).contains(&"10.9.7.98".to_string());
    follow(&mut d, &mut dv, moved_again).await;
    let svc3 = "svc-3.shop.svc.cluster.local";
    send(
        &mut o,
        &ClientMessage::Lookup {
            target: svc3.into(),
        },
    )
    .await;
    follow(&mut o, &mut ov, |v| !endpoints_of(v, svc3).is_empty()).await;
    assert!(matches!(
        recv(&mut o).await.0,
        AgentMessage::Lookup { host: Some(_), .. }
    ));

    let delta_msgs = counter(
        agent.debug_addr,
        "mesh_agent_view_messages_total{kind=\"delta\"}",
    )
    .await;
    let delta_total = counter(
        agent.debug_addr,
        "mesh_agent_view_bytes_total{kind=\"delta\"}",
    )
    .await;
    assert!(delta_msgs >= 2, "the raw stream's and the client's delta");
    assert!(delta_total >= delta_bytes as u64, "{delta_total}");
    let full_msgs = counter(
        agent.debug_addr,
        "mesh_agent_view_messages_total{kind=\"full\"}",
    )
    .await;
    assert!(
        full_msgs >= 5,
        "first views, the stream without deltas, the VirtualService: {full_msgs}"
    );
}

/// A fake agent sends the client library a delta on the wrong base: the
/// client ends the stream (not applying it), reconnects saying which version
/// it runs and that it takes deltas, and applies the full view it gets then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_on_the_wrong_base_ends_the_stream_and_the_next_starts_full() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let mut cfg = mesh_agent::client::ClientConfig::new(addr.to_string(), web("web-1"));
    cfg.initial_backoff = Duration::from_millis(10);
    let client = mesh_agent::client::spawn_client(cfg, |_: &ProxyView| Ok(()), shutdown.clone());
    let view = |version| AgentMessage::View {
        agent: "fake".into(),
        view: ProxyView {
            version,
            ..Default::default()
        },
    };
    let send = async |s: &mut TcpStream, m: &AgentMessage| {
        let b = serde_json::to_vec(m).unwrap();
        s.write_all(&(b.len() as u32).to_be_bytes()).await.unwrap();
        s.write_all(&b).await.unwrap();
    };
    let read = async |s: &mut TcpStream| -> Option<ClientMessage> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.ok()?;
        let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut b).await.ok()?;
        Some(serde_json::from_slice(&b).unwrap())
    };
    let accept = async || {
        tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the client connects")
            .unwrap()
            .0
    };

    let mut s = accept().await;
    assert!(matches!(
        read(&mut s).await,
        Some(ClientMessage::Subscribe {
            deltas: true,
            last_version: None,
            ..
        })
    ));
    send(&mut s, &view(1)).await;
    assert_eq!(read(&mut s).await, Some(ClientMessage::Ack { version: 1 }));
    let bad = ViewDelta {
        base: 0,
        version: 2,
        ..Default::default()
    };
    send(
        &mut s,
        &AgentMessage::Delta {
            agent: "fake".into(),
            delta: bad,
        },
    )
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(10), read(&mut s)).await;
    assert_eq!(closed.expect("the client ends the stream"), None);
    assert_eq!(client.state.borrow().current.as_ref().unwrap().version, 1);

    let mut s = accept().await;
    assert!(matches!(
        read(&mut s).await,
        Some(ClientMessage::Subscribe {
            deltas: true,
            last_version: Some(1),
            ..
        })
    ));
    send(&mut s, &view(3)).await;
    assert_eq!(read(&mut s).await, Some(ClientMessage::Ack { version: 3 }));
    assert_eq!(client.state.borrow().current.as_ref().unwrap().version, 3);
}
