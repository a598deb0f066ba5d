//! The sync stream with many simulated proxies using the real client library over
//! loopback TCP: full view on connect, a change reaching everyone, ACK/NACK
//! tracking in /debug/syncz, garbage closing only its own stream, and a killed and
//! restarted agent process resyncing everyone.

mod common;

use common::syncz;
use mesh_agent::client::{self, ClientConfig, ClientState};
use mesh_agent::config::Config;
use mesh_api::syncapi::{ProxyIdentity, ProxyView};
use mesh_e2e::wait::eventually;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const MESH: &str = include_str!("fixtures/mesh.yaml");
const PROXIES: usize = 200;

fn config(dir: &Path, listen: SocketAddr) -> Config {
    Config::from_flags([
        "--config-dir",
        dir.to_str().unwrap(),
        "--listen",
        &listen.to_string(),
        "--debug-listen",
        "127.0.0.1:0",
        "--agent-name",
        "agent-test",
    ])
    .unwrap()
}

/// An in-process agent on `dir` with a port of its own.
async fn start_in(dir: &Path, shutdown: &CancellationToken) -> mesh_agent::agent::Running {
    common::start_files_agent(&config(dir, "127.0.0.1:0".parse().unwrap()), dir, shutdown).await
}

fn identity(i: usize) -> ProxyIdentity {
    ProxyIdentity {
        pod: format!("pod-{i:03}"),
        namespace: ["shop", "inventory"][i % 2].into(),
        service_account: "default".into(),
        labels: [("app".to_string(), format!("app-{}", i % 7))].into(),
        ips: vec![format!("10.200.{}.{}", i / 250, i % 250)],
        router: false,
    }
}

/// Proxy 13 refuses any view that contains the "poison" service.
fn applier(i: usize) -> impl FnMut(&ProxyView) -> Result<(), String> + Send + 'static {
    move |v: &ProxyView| {
        if i == 13 && v.services.iter().any(|s| s.hostname.starts_with("poison.")) {
            Err("refusing poison.istio-system: listener conflict".into())
        } else {
            Ok(())
        }
    }
}

fn spawn_proxies(
    addr: SocketAddr,
    shutdown: &CancellationToken,
) -> Vec<watch::Receiver<ClientState>> {
    (0..PROXIES)
        .map(|i| {
            let mut cfg = ClientConfig::new(addr.to_string(), identity(i));
            cfg.max_backoff = Duration::from_millis(300);
            client::spawn(cfg, applier(i), shutdown.clone())
        })
        .collect()
}

fn versions(states: &[watch::Receiver<ClientState>]) -> Vec<Option<u64>> {
    states
        .iter()
        .map(|s| s.borrow().current.as_ref().map(|v| v.version))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_proxies_sync_ack_nack_and_survive_garbage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let agent = start_in(dir.path(), &shutdown).await;
    let debug = agent.debug_addr;
    let states = spawn_proxies(agent.sync_addr, &shutdown);

    // Everyone gets a full view and ACKs it.
    eventually("all proxies synced", Duration::from_secs(20), async || {
        let z = syncz(debug).await;
        z.version > 0
            && z.proxies.len() == PROXIES
            && z.proxies
                .iter()
                .all(|p| p.status == "SYNCED" && p.version_acked == Some(z.version))
    })
    .await;
    let v1 = syncz(debug).await.version;
    assert!(versions(&states).iter().all(|v| *v == Some(v1)));
    let shop_view = states[0].borrow().current.clone().unwrap();
    assert!(shop_view
        .services
        .iter()
        .any(|s| s.hostname == "web.shop.svc.cluster.local"));
    assert!(
        !shop_view
            .services
            .iter()
            .any(|s| s.hostname == "ledger.inventory.svc.cluster.local"),
        "scoped by exportTo"
    );

    // A change visible to everyone (a root-namespace service) reaches all proxies.
    std::fs::write(
        dir.path().join("poison.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: poison, namespace: istio-system}\nspec: {ports: [{name: http, port: 80}]}\n",
    )
    .unwrap();
    let took = eventually(
        "change reached everyone",
        Duration::from_secs(10),
        async || {
            let z = syncz(debug).await;
            z.version > v1
                && z.proxies.iter().all(|p| {
                    p.version_sent == Some(z.version)
                        && (p.status == "SYNCED" || p.name == "pod-013")
                })
        },
    )
    .await;
    println!("change reached {PROXIES} proxies (and their ACKs came back) in {took:?}");
    let z = syncz(debug).await;
    let v2 = z.version;
    let bad = z.proxies.iter().find(|p| p.name == "pod-013").unwrap();
    assert_eq!(bad.status, "ERROR");
    assert_eq!(
        bad.reason.as_deref(),
        Some("refusing poison.istio-system: listener conflict")
    );
    assert_eq!((bad.version_sent, bad.version_acked), (Some(v2), Some(v1)));
    assert_eq!(bad.agent, "agent-test");
    // The NACKing proxy keeps its last good view; the others run the new one.
    let vs = versions(&states);
    assert_eq!(vs[13], Some(v1));
    assert!(vs
        .iter()
        .enumerate()
        .all(|(i, v)| i == 13 || *v == Some(v2)));

    // A proxy speaking garbage gets an error and is disconnected; nobody else is.
    let mut raw = tokio::net::TcpStream::connect(agent.sync_addr)
        .await
        .unwrap();
    raw.write_all(&[0, 0, 0, 5, b'{', b'x', b'x', b'x', b'}'])
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let msg: serde_json::Value = serde_json::from_slice(&reply[4..]).unwrap();
    assert_eq!(msg["type"], "error");
    assert!(
        msg["message"]
            .as_str()
            .unwrap()
            .contains("malformed message"),
        "{msg}"
    );
    // A subscribed proxy that later sends garbage is dropped alone as well.
    let mut sub = tokio::net::TcpStream::connect(agent.sync_addr)
        .await
        .unwrap();
    let hello = serde_json::to_vec(&serde_json::json!({"type": "subscribe", "identity": {"pod": "rogue", "namespace": "shop"}})).unwrap();
    sub.write_all(&(hello.len() as u32).to_be_bytes())
        .await
        .unwrap();
    sub.write_all(&hello).await.unwrap();
    eventually("rogue registered", Duration::from_secs(5), async || {
        syncz(debug).await.proxies.len() == PROXIES + 1
    })
    .await;
    sub.write_all(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd])
        .await
        .unwrap();
    eventually("rogue dropped", Duration::from_secs(5), async || {
        syncz(debug).await.proxies.len() == PROXIES
    })
    .await;
    let z = syncz(debug).await;
    assert_eq!(
        z.proxies.iter().filter(|p| p.status == "SYNCED").count(),
        PROXIES - 1
    );
    assert!(states.iter().all(|s| s.borrow().connected));
}

/// The sync port's accept queue holds a mesh's reconnect storm: the kernel's
/// cap (`net.core.somaxconn`), not the 128 of tokio's `TcpListener::bind`,
/// beyond which Linux drops handshakes and the proxies wait 1 to 15 s for
/// the retransmission (`ss` shows a listener's queue size as its Send-Q).
#[tokio::test]
async fn the_sync_listener_queue_is_the_kernels_cap() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let agent = start_in(dir.path(), &shutdown).await;
    let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        cap > 128,
        "net.core.somaxconn is {cap}: this test needs more than 128"
    );
    let filter = format!("sport = :{}", agent.sync_addr.port());
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &filter])
        .output()
        .expect("ss (iproute2)");
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let queue: u32 = line
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listener on {filter} in ss output {line:?}"));
    assert_eq!(queue, cap, "{line}");
}

/// Kills the agent process for real (SIGKILL) and starts a new one on the same port.
struct AgentProc(std::process::Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent_process(dir: &Path, listen: SocketAddr) -> (AgentProc, SocketAddr) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
        .args(["--source", "files", "--config-dir"])
        .arg(dir)
        .args([
            "--listen",
            &listen.to_string(),
            "--debug-listen",
            "127.0.0.1:0",
            "--agent-name",
            "agent-proc",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let debug = line
        .trim()
        .rsplit("debug=")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (AgentProc(child), debug)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_agent_resyncs_everyone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (agent, debug) = start_agent_process(dir.path(), port);
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let states = spawn_proxies(port, &shutdown);
    eventually("all synced", Duration::from_secs(20), async || {
        let z = syncz(debug).await;
        z.proxies.len() == PROXIES && z.proxies.iter().all(|p| p.status == "SYNCED")
    })
    .await;
    let before = versions(&states);
    drop(agent); // SIGKILL
    eventually("everyone notices", Duration::from_secs(10), async || {
        states.iter().all(|s| !s.borrow().connected)
    })
    .await;
    assert_eq!(
        versions(&states),
        before,
        "proxies keep their last snapshot while the agent is down"
    );
    // Config changed while the agent was down; the new agent serves it to everyone.
    std::fs::write(dir.path().join("extra.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: istio-system}\nspec: {ports: [{name: http, port: 80}]}\n").unwrap();
    let (_agent2, debug2) = start_agent_process(dir.path(), port);
    eventually("everyone resynced", Duration::from_secs(20), async || {
        states.iter().all(|s| {
            s.borrow().connected
                && s.borrow()
                    .current
                    .as_ref()
                    .is_some_and(|v| v.services.iter().any(|x| x.hostname.starts_with("late.")))
        })
    })
    .await;
    let z = syncz(debug2).await;
    assert_eq!(z.proxies.len(), PROXIES);
    assert!(z
        .proxies
        .iter()
        .all(|p| p.status == "SYNCED" && p.agent == "agent-proc"));
    assert!(
        versions(&states).iter().zip(&before).all(|(a, b)| a > b),
        "versions grow across restarts"
    );
}
