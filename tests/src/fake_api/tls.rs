//! The fake over HTTPS, as a real API server is reached: rustls with the
//! certificate a test chose, so clients' verification (the kubeconfig's CA,
//! a foreign certificate refused) is exercised for real. A handshake the
//! client aborts ends that connection only.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

use super::{route, Fake, Threaded};

pub(super) async fn listen(
    fake: &Arc<Fake>,
    cfg: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(route).with_state(fake.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(
                        TokioIo::new(tls),
                        TowerToHyperService::new(app),
                    )
                    .await;
            });
        }
    });
    addr
}

impl Fake {
    /// [`Fake::spawn`] over HTTPS, presenting `cert_der` (signed for 127.0.0.1)
    /// with its PKCS#8 key `key_der`.
    pub fn spawn_tls(self: &Arc<Self>, cert_der: Vec<u8>, key_der: Vec<u8>) -> Threaded {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into());
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.into()], key)
        .unwrap();
        self.spawn_with(Some(Arc::new(cfg)))
    }
}
