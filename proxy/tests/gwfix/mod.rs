//! Fixture of the gateway tests: a node with an echo pod (no sidecar), a
//! gateway pod running `mesh-proxy router` fed a view file, and a plain
//! client pod that calls the gateway's pod IP as a load balancer would.
#![allow(dead_code)]

use std::collections::BTreeMap;

use mesh_api::gatewayview::{
    GatewayListener, GatewayServer, GatewayTls, GatewayView, TlsCredential,
};
use mesh_api::networking::VirtualServiceSpec;
use mesh_e2e::testca::Leaf;

use crate::common::*;

pub const GATEWAY: &str = "istio-system/ingress";

pub struct Gw {
    pub dir: ViewDir,
    pub view: ProxyView,
    pub proxy: PodProcess,
    pub echo: PodProcess,
    pub gw: Pod,
    pub app: Pod,
    pub client: Pod,
    pub node: Node,
}

/// A server of [`GATEWAY`] bound to `vss`.
pub fn server(index: usize, protocol: &str, hosts: &[&str], vss: &[&str]) -> GatewayServer {
    GatewayServer {
        gateway: GATEWAY.into(),
        index,
        port_name: protocol.to_ascii_lowercase(),
        protocol: protocol.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        virtual_services: vss.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

pub fn listener(port: u16, service_port: u16, servers: Vec<GatewayServer>) -> GatewayListener {
    GatewayListener {
        port,
        service_port,
        servers,
    }
}

/// Terminating TLS with `leaf` (and a client CA for the mutual modes).
pub fn tls(mode: &str, source: &str, leaf: &Leaf, ca: Option<&str>) -> GatewayTls {
    GatewayTls {
        mode: mode.into(),
        credential: Some(TlsCredential {
            source: source.into(),
            cert_chain: leaf.cert_pem.clone(),
            private_key: leaf.key_pem.clone(),
            ca_certificates: ca.map(str::to_string),
            ca_crl: None,
        }),
        ..Default::default()
    }
}

pub fn vs(yaml: &str) -> VirtualServiceSpec {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// The node, its pods and a gateway running `gateway`, with `vss` bound.
pub fn gw_world(listeners: Vec<GatewayListener>, vss: &[(&str, &str)]) -> Gw {
    let node = Node::new().unwrap();
    let app = node.add_pod("echo-v1-0", "default").unwrap();
    let gw = node
        .add_pod("istio-ingressgateway-7d4b9c6f5d-x2x9z", "istio-system")
        .unwrap();
    let client = node.add_pod("client-0", "default").unwrap();
    let echo = start_echo(&app, "v1");
    let eps = [(app.ip(), "v1")];
    let view = ProxyView {
        version: 1,
        services: vec![
            svc(
                "echo.default.svc.cluster.local",
                VIP,
                8080,
                "http",
                "HTTP",
                &eps,
            )
            .into(),
            svc(
                "tcp-echo.default.svc.cluster.local",
                TCP_VIP,
                9000,
                "tcp-echo",
                "TCP",
                &eps,
            )
            .into(),
            svc(
                "echo-h2.default.svc.cluster.local",
                H2_VIP,
                8080,
                "http2",
                "HTTP2",
                &eps,
            )
            .into(),
            svc(
                "grpc-echo.default.svc.cluster.local",
                GRPC_VIP,
                50051,
                "grpc",
                "GRPC",
                &eps,
            )
            .into(),
            svc(
                "secure.default.svc.cluster.local",
                BANNER_VIP,
                9443,
                "tls",
                "TLS",
                &eps,
            )
            .into(),
        ],
        gateway: Some(GatewayView {
            listeners,
            virtual_services: vss
                .iter()
                .map(|(k, y)| (k.to_string(), vs(y)))
                .collect::<BTreeMap<_, _>>(),
            warnings: vec![],
        }),
        ..Default::default()
    };
    let dir = ViewDir::new();
    let path = dir.write(&view);
    let proxy = start_router(&gw, &path, &["--workload-name", "istio-ingressgateway"]);
    Gw {
        dir,
        view,
        proxy,
        echo,
        gw,
        app,
        client,
        node,
    }
}

impl Gw {
    /// Rewrites the view and waits (bounded) until the gateway runs it.
    pub fn update(&mut self, f: impl FnOnce(&mut GatewayView)) {
        f(self.view.gateway.as_mut().unwrap());
        self.view.version += 1;
        self.dir.write(&self.view);
        let want = self.view.version;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.dump()["version"] != want {
            assert!(Instant::now() < deadline, "version {want} never applied");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    pub fn dump_text(&self) -> String {
        let out = self
            .gw
            .exec(0, &["curl", "-s", "http://127.0.0.1:15000/config_dump"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn dump(&self) -> serde_json::Value {
        serde_json::from_str(&self.dump_text()).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        metrics(&self.gw)
    }

    pub fn ip(&self) -> String {
        self.gw.ip().to_string()
    }

    /// Writes `text` as a world-readable file for the client's curl.
    pub fn file(&self, name: &str, text: &str) -> String {
        write(&self.dir.0, name, text);
        self.dir.0.join(name).display().to_string()
    }

    /// `curl --resolve host:port:GATEWAY https://host:port/path` with `args`:
    /// the status code (`000`: no HTTP answer) and curl's exit code.
    pub fn https(&self, host: &str, port: u16, path: &str, args: &[&str]) -> (String, i32) {
        let resolve = format!("{host}:{port}:{}", self.ip());
        let url = format!("https://{host}:{port}{path}");
        let mut argv = vec![
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            &resolve,
        ];
        argv.extend_from_slice(args);
        argv.push(&url);
        let out = self.client.exec(APP, &argv).unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    /// What `openssl s_client -servername sni` shows of the gateway's answer.
    pub fn s_client(&self, port: u16, sni: &str) -> String {
        let connect = format!("{}:{port}", self.ip());
        let script = format!(
            "openssl s_client -connect {connect} -servername {sni} </dev/null 2>&1 | head -40"
        );
        let out = self
            .client
            .exec(APP, &["timeout", "5", "sh", "-c", &script])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The value of an unlabelled counter (0 when absent).
pub fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0.0)
}
