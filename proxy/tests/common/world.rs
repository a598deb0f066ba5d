//! The usual test world: a node with a client pod and `n` echo server pods,
//! all meshed and fed one view with the echo Services at fixed VIPs, so most
//! tests start from one call instead of wiring pods themselves.

use super::pods::{redirect, start_echo, start_proxy};
use super::view::{svc, ViewDir};
use mesh_api::syncapi::ProxyView;
use mesh_e2e::harness::{Node, Pod, PodProcess};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const VIP: &str = "10.96.0.10";
pub const TCP_VIP: &str = "10.96.0.11";
pub const BANNER_VIP: &str = "10.96.0.12";
pub const H2_VIP: &str = "10.96.0.13";
pub const GRPC_VIP: &str = "10.96.0.14";

/// A WebSocket upgrade request to the echo service, as bash's `printf` takes
/// it (the echo app answers 101 and echoes every byte after it).
pub const WS_UPGRADE: &str = "GET /ws HTTP/1.1\\r\\nHost: echo\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\nSec-WebSocket-Version: 13\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n\\r\\n";

pub struct World {
    pub dir: ViewDir,
    pub view: ProxyView,
    /// Per server pod: (echo app, proxy).
    pub server_procs: Vec<(PodProcess, PodProcess)>,
    pub client_proxy: PodProcess,
    pub client: Pod,
    pub servers: Vec<Pod>,
    pub node: Node,
}

impl World {
    /// Waits (bounded) until the client's proxy runs the current view version.
    pub fn wait_applied(&self) {
        let want = self.view.version;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let dump = self
                .client
                .exec(0, &["curl", "-s", "http://127.0.0.1:15000/config_dump"])
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap_or_default();
            if v["version"] == want {
                return;
            }
            assert!(Instant::now() < deadline, "version {want} never applied");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Rewrites the view every proxy reads (atomically).
    pub fn update(&mut self, f: impl FnOnce(&mut ProxyView)) {
        f(&mut self.view);
        self.view.version += 1;
        self.dir.write(&self.view);
    }
}

/// Client pod + `n` server pods, all meshed; the echo service has every server as
/// an endpoint.
pub fn world(n: usize, policy: &str) -> World {
    world_with(n, policy, &[])
}

/// Like [`world`], with extra flags for every proxy.
pub fn world_with(n: usize, policy: &str, extra: &[&str]) -> World {
    let node = Node::new().unwrap();
    let client = node.add_pod("client-0", "default").unwrap();
    let servers: Vec<Pod> = (0..n)
        .map(|i| {
            node.add_pod(&format!("echo-v{}-0", i + 1), "default")
                .unwrap()
        })
        .collect();
    let eps: Vec<(IpAddr, String)> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (s.ip(), format!("v{}", i + 1)))
        .collect();
    let eps_ref: Vec<(IpAddr, &str)> = eps.iter().map(|(ip, v)| (*ip, v.as_str())).collect();
    let view = ProxyView {
        version: 1,
        services: vec![
            svc(
                "echo.default.svc.cluster.local",
                VIP,
                8080,
                "http",
                "HTTP",
                &eps_ref,
            )
            .into(),
            svc(
                "tcp-echo.default.svc.cluster.local",
                TCP_VIP,
                9000,
                "tcp-echo",
                "TCP",
                &eps_ref,
            )
            .into(),
            svc(
                "banner.default.svc.cluster.local",
                BANNER_VIP,
                9100,
                "banner",
                "UNKNOWN",
                &eps_ref,
            )
            .into(),
            svc(
                "echo-h2.default.svc.cluster.local",
                H2_VIP,
                8080,
                "http2",
                "HTTP2",
                &eps_ref,
            )
            .into(),
        ],
        outbound_traffic_policy: policy.into(),
        ..Default::default()
    };
    let dir = ViewDir::new();
    let path = dir.write(&view);
    let mut server_procs = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        redirect(s);
        let echo = start_echo(s, &format!("v{}", i + 1));
        let labels = format!("app=echo,version=v{}", i + 1);
        server_procs.push((echo, start_proxy(s, &path, &labels, extra)));
    }
    redirect(&client);
    let client_proxy = start_proxy(&client, &path, "app=client,version=v1", extra);
    World {
        dir,
        view,
        server_procs,
        client_proxy,
        client,
        servers,
        node,
    }
}
