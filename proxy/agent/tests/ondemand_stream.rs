//! On-demand discovery over the sync stream, the agent's half, with a proxy
//! speaking raw frames: a lookup for a service of another namespace is
//! answered after a view that carries it; one for a service `exportTo`
//! hides, or an address outside the mesh, answers nothing and sends no view;
//! a stream flooding lookups gets refusals while another stream's lookup is
//! still answered; lookups sent together share one view.

use mesh_agent::config::Config;
use mesh_agent::source::files::FilesSource;
use mesh_api::syncapi::{AgentMessage, ClientMessage, ProxyIdentity};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const MESH: &str = include_str!("fixtures/mesh.yaml");
const STOCK: &str = "stock.inventory.svc.cluster.local";

async fn send(s: &mut TcpStream, m: &ClientMessage) {
    let b = serde_json::to_vec(m).unwrap();
    s.write_all(&(b.len() as u32).to_be_bytes()).await.unwrap();
    s.write_all(&b).await.unwrap();
}

async fn recv(s: &mut TcpStream) -> AgentMessage {
    let read = async {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut b).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a message within 10s")
}

/// A sidecar of namespace `shop`.
fn web(pod: &str) -> ProxyIdentity {
    ProxyIdentity {
        pod: pod.into(),
        namespace: "shop".into(),
        service_account: "default".into(),
        ..Default::default()
    }
}

/// The client's applied view has `host`.
fn has(client: &mesh_agent::client::Client, host: &str) -> bool {
    client
        .state
        .borrow()
        .current
        .as_ref()
        .is_some_and(|v| v.services.iter().any(|s| s.hostname == host))
}

async fn first_view(client: &mesh_agent::client::Client) {
    mesh_e2e::wait::eventually("first view", Duration::from_secs(10), async || {
        client.state.borrow().current.is_some()
    })
    .await;
}

async fn subscribe(addr: SocketAddr, pod: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(
        &mut s,
        &ClientMessage::Subscribe {
            identity: web(pod),
            last_version: None,
            token: None,
            requested: vec![],
            deltas: false,
        },
    )
    .await;
    match recv(&mut s).await {
        AgentMessage::View { view, .. } => {
            assert!(view.version > 0);
            assert!(!view.services.iter().any(|x| x.hostname == STOCK));
        }
        other => panic!("{other:?}"),
    }
    s
}

fn answer(m: AgentMessage) -> (String, Option<String>, Option<String>) {
    match m {
        AgentMessage::Lookup {
            target,
            host,
            refused,
        } => (target, host, refused),
        other => panic!("expected a lookup answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_extend_the_view_hide_what_istio_hides_and_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let agent = on_demand_agent(dir.path(), &shutdown).await;
    let mut web = subscribe(agent.sync_addr, "web-1").await;

    // A Service VIP of another namespace: a view with it, then the answer.
    send(
        &mut web,
        &ClientMessage::Lookup {
            target: "10.96.0.20".into(),
        },
    )
    .await;
    match recv(&mut web).await {
        AgentMessage::View { view, .. } => {
            assert!(view.services.iter().any(|x| x.hostname == STOCK));
        }
        other => panic!("expected the extended view first, got {other:?}"),
    }
    assert_eq!(
        answer(recv(&mut web).await),
        ("10.96.0.20".into(), Some(STOCK.into()), None)
    );
    // Known now: the answer comes alone.
    send(
        &mut web,
        &ClientMessage::Lookup {
            target: "stock.inventory".into(),
        },
    )
    .await;
    assert_eq!(answer(recv(&mut web).await).1.as_deref(), Some(STOCK));
    // exportTo "." and the outside: nothing, and no view.
    for target in ["ledger.inventory", "10.96.0.30", "203.0.113.7"] {
        send(
            &mut web,
            &ClientMessage::Lookup {
                target: target.into(),
            },
        )
        .await;
        assert_eq!(answer(recv(&mut web).await), (target.into(), None, None));
    }

    // A flood: the burst is answered, then refusals; another stream is fine.
    let n = 300;
    for i in 0..n {
        let target = format!("203.0.113.{}", i % 250);
        send(&mut web, &ClientMessage::Lookup { target }).await;
    }
    let mut refused = 0;
    for _ in 0..n {
        if let (_, None, Some(why)) = answer(recv(&mut web).await) {
            assert!(why.contains("too many lookups"), "{why}");
            refused += 1;
        }
    }
    assert!(refused >= n - 100 - 40, "only {refused} of {n} refused");
    let mut other = subscribe(agent.sync_addr, "web-2").await;
    send(
        &mut other,
        &ClientMessage::Lookup {
            target: STOCK.into(),
        },
    )
    .await;
    assert!(matches!(recv(&mut other).await, AgentMessage::View { .. }));
    assert_eq!(answer(recv(&mut other).await).1.as_deref(), Some(STOCK));
}

/// Lookups a proxy sends together (a pod's first connections, opened at
/// once) are answered after one view holding every host they found, not a
/// view per host; each answer still comes after the view that carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_sent_together_share_one_view() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let agent = on_demand_agent(dir.path(), &shutdown).await;
    let mut web = subscribe(agent.sync_addr, "web-1").await;
    let targets = ["10.96.0.20", "203.0.113.7", "10.96.0.40"];
    // One write, so the agent reads the three frames in one go.
    let mut frames = Vec::new();
    for target in targets {
        let b = serde_json::to_vec(&ClientMessage::Lookup {
            target: target.into(),
        })
        .unwrap();
        frames.extend_from_slice(&(b.len() as u32).to_be_bytes());
        frames.extend_from_slice(&b);
    }
    web.write_all(&frames).await.unwrap();
    let view = hosts(recv(&mut web).await);
    assert!(
        view.contains(&STOCK.to_string()) && view.contains(&CATALOG.to_string()),
        "one view with both hosts: {view:?}"
    );
    let mut answers = Vec::new();
    for _ in targets {
        answers.push(answer(recv(&mut web).await));
    }
    assert_eq!(
        answers,
        vec![
            ("10.96.0.20".into(), Some(STOCK.into()), None),
            ("203.0.113.7".into(), None, None),
            ("10.96.0.40".into(), Some(CATALOG.into()), None),
        ]
    );
    // Nothing else was sent: the next message answers the next question.
    send(
        &mut web,
        &ClientMessage::Lookup {
            target: "stock.inventory".into(),
        },
    )
    .await;
    assert_eq!(answer(recv(&mut web).await).1.as_deref(), Some(STOCK));
}

/// The sync client's half: a lookup answered `Found` means the view carrying
/// the service is applied; concurrent lookups all get it; an outside address
/// is `NotInMesh`; after the agent restarts, the client's new view carries
/// what it had looked up without asking again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_waits_for_the_view_and_keeps_its_hosts_across_an_agent_restart() {
    use mesh_agent::client::{spawn_client, ClientConfig};
    use mesh_api::synclookup::Answer;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let start = |listen: String| {
        let dir = dir.path().to_path_buf();
        async move {
            let cfg = Config::from_flags([
                "--config-dir",
                dir.to_str().unwrap(),
                "--listen",
                &listen,
                "--debug-listen",
                "127.0.0.1:0",
                "--visibility",
                "on-demand",
            ])
            .unwrap();
            let stop = CancellationToken::new();
            let src = Box::new(FilesSource {
                dir: dir.clone(),
                debounce: cfg.debounce(),
            });
            let agent = mesh_agent::agent::start(&cfg, src, stop.clone())
                .await
                .unwrap();
            (agent, stop)
        }
    };
    let (agent, stop1) = start("127.0.0.1:0".into()).await;
    let addr = agent.sync_addr;
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let mut cfg = ClientConfig::new(addr.to_string(), web("web-1"));
    cfg.max_backoff = Duration::from_millis(200);
    // Whether each applied view had stock, in order.
    let applied = std::sync::Arc::new(std::sync::Mutex::new(Vec::<bool>::new()));
    let log = applied.clone();
    let apply = move |v: &mesh_api::syncapi::ProxyView| {
        let stock = v.services.iter().any(|s| s.hostname == STOCK);
        log.lock().unwrap().push(stock);
        Ok(())
    };
    let client = spawn_client(cfg, apply, shutdown.clone());
    let has_stock = |c: &mesh_agent::client::Client| has(c, STOCK);
    first_view(&client).await;
    assert!(!has_stock(&client));
    let asks = (0..8).map(|_| client.lookup("stock.inventory"));
    for a in futures::future::join_all(asks).await {
        assert_eq!(a, Answer::Found(STOCK.into()));
    }
    assert!(has_stock(&client), "Found comes after the view is applied");
    assert_eq!(client.lookup("203.0.113.7").await, Answer::NotInMesh);
    assert_eq!(client.lookup("203.0.113.7").await, Answer::NotInMesh);

    // The agent restarts on the same port: the new view has stock at once.
    stop1.cancel();
    drop(agent);
    mesh_e2e::wait::eventually(
        "client saw the agent go",
        Duration::from_secs(10),
        async || !client.state.borrow().connected,
    )
    .await;
    let before = applied.lock().unwrap().len();
    let (agent2, stop2) = start(addr.to_string()).await;
    let _stop2 = stop2.drop_guard();
    mesh_e2e::wait::eventually(
        "a view from the new agent",
        Duration::from_secs(10),
        async || applied.lock().unwrap().len() > before,
    )
    .await;
    let first_after = applied.lock().unwrap()[before];
    assert!(
        first_after,
        "the restarted agent's first view already has stock"
    );
    drop(agent2);
}

const CATALOG: &str = "catalog.inventory.svc.cluster.local";

/// A second service another namespace exports, beside stock.
const CATALOG_YAML: &str = "apiVersion: v1
kind: Service
metadata: {name: catalog, namespace: inventory}
spec:
  clusterIP: 10.96.0.40
  selector: {app: catalog}
  ports:
  - {name: http, port: 8000}
";

/// An on-demand agent over the fixture mesh (and catalog), on loopback.
async fn on_demand_agent(
    dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> mesh_agent::agent::Running {
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    std::fs::write(dir.join("catalog.yaml"), CATALOG_YAML).unwrap();
    let cfg = Config::from_flags([
        "--config-dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--debug-listen",
        "127.0.0.1:0",
        "--visibility",
        "on-demand",
    ])
    .unwrap();
    cfg.validate().unwrap();
    let src = Box::new(FilesSource {
        dir: dir.to_path_buf(),
        debounce: cfg.debounce(),
    });
    mesh_agent::agent::start(&cfg, src, shutdown.clone())
        .await
        .unwrap()
}

fn hosts(m: AgentMessage) -> Vec<String> {
    match m {
        AgentMessage::View { view, .. } => view
            .services
            .into_iter()
            .map(|s| s.hostname.clone())
            .collect(),
        other => panic!("expected a view, got {other:?}"),
    }
}

/// Ageing out, the agent's half: `Forget` takes a looked-up host out of the
/// proxy's view and the smaller view is pushed at once; forgetting a host the
/// view has anyway (its own namespace) changes nothing and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_shrinks_the_pushed_view() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let agent = on_demand_agent(dir.path(), &shutdown).await;
    let mut web = subscribe(agent.sync_addr, "web-1").await;
    for (target, host) in [("10.96.0.20", STOCK), ("10.96.0.40", CATALOG)] {
        send(
            &mut web,
            &ClientMessage::Lookup {
                target: target.into(),
            },
        )
        .await;
        assert!(hosts(recv(&mut web).await).contains(&host.to_string()));
        assert_eq!(answer(recv(&mut web).await).1.as_deref(), Some(host));
    }

    send(
        &mut web,
        &ClientMessage::Forget {
            targets: vec![STOCK.into()],
        },
    )
    .await;
    let view = hosts(recv(&mut web).await);
    assert!(!view.contains(&STOCK.to_string()), "{view:?}");
    assert!(view.contains(&CATALOG.to_string()), "{view:?}");
    assert!(view.contains(&"web.shop.svc.cluster.local".to_string()));

    // Its own namespace's service is not on demand: nothing to forget, no
    // view; the next message is the answer to the next question.
    send(
        &mut web,
        &ClientMessage::Forget {
            targets: vec!["web.shop.svc.cluster.local".into(), STOCK.into()],
        },
    )
    .await;
    send(
        &mut web,
        &ClientMessage::Lookup {
            target: "203.0.113.7".into(),
        },
    )
    .await;
    assert_eq!(
        answer(recv(&mut web).await),
        ("203.0.113.7".into(), None, None)
    );
    // Looked up again, it is back.
    send(
        &mut web,
        &ClientMessage::Lookup {
            target: "10.96.0.20".into(),
        },
    )
    .await;
    let view = hosts(recv(&mut web).await);
    assert!(view.contains(&STOCK.to_string()) && view.contains(&CATALOG.to_string()));
    assert_eq!(answer(recv(&mut web).await).1.as_deref(), Some(STOCK));
}

/// Ageing out, the client's half: with a one-second idle TTL, a host nobody
/// uses leaves the applied view while one held by an open connection stays;
/// closing the connection lets it go too; a new lookup brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_forgets_idle_hosts_but_not_ones_in_use() {
    use mesh_agent::client::{spawn_client, ClientConfig};
    use mesh_api::syncidle::IdlePolicy;
    use mesh_api::synclookup::Answer;
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let agent = on_demand_agent(dir.path(), &shutdown).await;
    let mut cfg = ClientConfig::new(agent.sync_addr.to_string(), web("web-1"));
    cfg.idle = Some(IdlePolicy {
        ttl: Duration::from_secs(1),
        sweep: Duration::from_millis(200),
    });
    let client = spawn_client(
        cfg,
        |_: &mesh_api::syncapi::ProxyView| Ok(()),
        shutdown.clone(),
    );
    let has = |host: &str| has(&client, host);
    first_view(&client).await;
    assert_eq!(
        client.lookup("10.96.0.20").await,
        Answer::Found(STOCK.into())
    );
    let open = client.touch(STOCK).expect("stock was found on demand");
    assert_eq!(
        client.lookup("10.96.0.40").await,
        Answer::Found(CATALOG.into())
    );
    assert!(has(STOCK) && has(CATALOG));

    mesh_e2e::wait::eventually("catalog aged out", Duration::from_secs(10), async || {
        !has(CATALOG)
    })
    .await;
    assert!(has(STOCK), "a host held by an open connection stays");
    assert_eq!(client.on_demand_hosts(), vec![STOCK.to_string()]);
    assert!(client.touch(CATALOG).is_none(), "forgotten: untracked");

    drop(open);
    mesh_e2e::wait::eventually("stock aged out", Duration::from_secs(10), async || {
        !has(STOCK)
    })
    .await;
    assert!(client.on_demand_hosts().is_empty());
    assert_eq!(
        client.lookup("stock.inventory").await,
        Answer::Found(STOCK.into())
    );
    assert!(has(STOCK));
}
