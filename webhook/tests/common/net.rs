//! A real HTTPS client (rustls + hyper, keep-alive) and an in-process webhook
//! server on 127.0.0.1:0 that stops when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mesh_webhook::server::{serve, AppState, Limits};
use mesh_webhook::{config, reload, tls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    /// DER of the leaf certificate the server presented.
    pub peer_cert: Vec<u8>,
}

pub fn client_config(ca_pems: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> std::io::Result<Client> {
        Self::connect_as(addr, ca_pem, "localhost").await
    }

    /// Connects expecting the server to be `server_name` (SNI and verification).
    pub async fn connect_as(
        addr: SocketAddr,
        ca_pem: &str,
        server_name: &str,
    ) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(client_config(&[ca_pem]));
        let tls = connector
            .connect(ServerName::try_from(server_name.to_string()).unwrap(), tcp)
            .await?;
        let peer_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client { sender, peer_cert })
    }

    /// Like [`Client::request`], `None` if the connection is gone.
    pub async fn try_request(
        &mut self,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Option<(u16, Bytes)> {
        self.sender.ready().await.ok()?;
        let mut b = hyper::Request::builder()
            .method("POST")
            .uri("/inject")
            .header("host", "localhost");
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        let resp = self
            .sender
            .send_request(b.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Bytes) {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        self.sender.ready().await.expect("connection still open");
        let resp = self
            .sender
            .send_request(b.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    pub async fn post_json(&mut self, body: &serde_json::Value) -> serde_json::Value {
        let (status, b) = self
            .request(
                "POST",
                "/inject",
                Some("application/json"),
                serde_json::to_vec(body).unwrap(),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
        serde_json::from_slice(&b).unwrap()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub mesh: PathBuf,
    /// Versions of the cert pair / mesh config applied and rejected so far.
    pub cert_reloads: Arc<reload::ReloadStats>,
    pub mesh_reloads: Arc<reload::ReloadStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    watch_stop: tokio::sync::watch::Sender<bool>,
}

impl TestServer {
    /// Starts a server with the given serving cert, mesh config YAML and limits;
    /// files are watched every 50 ms.
    pub async fn start(
        cert_pem: &str,
        key_pem: &str,
        mesh_yaml: &str,
        limits: Limits,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, mesh) = (
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("mesh.yaml"),
        );
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        std::fs::write(&mesh, mesh_yaml).unwrap();
        let store = tls::CertStore::new(
            tls::load_certified_key(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap(),
        );
        let state = AppState::new(config::parse_mesh_config(mesh_yaml).unwrap(), limits);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (watch_stop, rx) = tokio::sync::watch::channel(false);
        let every = Duration::from_millis(50);
        let cert_reloads =
            reload::watch_cert(store.clone(), cert.clone(), key.clone(), every, rx.clone());
        let mesh_reloads = reload::watch_mesh_config(state.clone(), mesh.clone(), every, rx);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, tls::server_config(store), state, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            dir,
            cert,
            key,
            mesh,
            cert_reloads,
            mesh_reloads,
            stop: Some(stop),
            watch_stop,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.watch_stop.send(true);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
