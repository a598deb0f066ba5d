//! The in-process fake Kubernetes API server of every test that talks to one
//! (no real API server exists here): axum on 127.0.0.1:0, plain HTTP.
//!
//! It keeps objects per collection with resourceVersions and serves what the
//! mesh's clients use: list (namespace and `labelSelector` filters) and watch
//! (backlog from a resourceVersion, bookmarks, `410 Gone` once compacted, dropped
//! streams, partitions; a kind's lists held back, a kind answered `404` as
//! a CRD that is not installed; bookmarks every 200 ms, or as often as
//! [`Fake::with_bookmarks`] says), GET of one object, POST create (`409 AlreadyExists`),
//! PUT replace (`409 Conflict` on a stale resourceVersion), PATCH as server-side
//! apply or RFC 6902 JSON patch, DELETE, the `status` subresource (merge
//! patch), TokenReviews of the tokens a test registers,
//! and the pod subresources `proxy` and `portforward` bridged to real processes
//! ([`routes`], [`portforward`]). Every request is recorded (method, path and
//! query, Authorization header, answered status) for the tests to assert that a
//! client really went through the API. Errors are `Status` objects as the real
//! server writes them.

mod portforward;
mod reply;
mod routes;
mod store;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use routes::route;
pub use store::{collection, docs, kind_of, pod, Db, Fake, Seen};

impl Fake {
    /// Serves on 127.0.0.1:0 until `shutdown`; returns its address.
    pub async fn listen(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(route).with_state(self.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        });
        addr
    }

    /// Serves on 127.0.0.1:0 for as long as the test's runtime runs.
    pub async fn start(self: &Arc<Self>) -> SocketAddr {
        self.listen(tokio_util::sync::CancellationToken::new())
            .await
    }

    /// Serves on 127.0.0.1:0 until `shutdown`; returns a kube-rs client for it.
    pub async fn serve(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> kube::Client {
        let addr = self.listen(shutdown).await;
        let cfg = kube::Config::new(format!("http://{addr}").parse().unwrap());
        kube::Client::try_from(cfg).unwrap()
    }

    /// Serves on a thread of its own (for tests without a runtime, which run
    /// clients as processes) until the returned handle is dropped; the handle
    /// writes a kubeconfig pointing at it.
    pub fn spawn(self: &Arc<Self>) -> Threaded {
        self.spawn_with(None)
    }

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

    /// [`Fake::spawn`], over HTTPS with `tls` when given.
    fn spawn_with(self: &Arc<Self>, tls: Option<Arc<rustls::ServerConfig>>) -> Threaded {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let (fake, st) = (self.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let addr = match tls {
                    None => fake.listen(st.clone()).await,
                    Some(cfg) => tls::listen(&fake, cfg, st.clone()).await,
                };
                let _ = tx.send(addr);
                st.cancelled().await;
            });
        });
        let addr = rx.recv().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kubeconfig"),
            kubeconfig(&format!("{scheme}://{addr}")),
        )
        .unwrap();
        Threaded {
            fake: self.clone(),
            addr,
            dir,
            stop,
            thread: Some(thread),
        }
    }
}

/// A fake serving on its own thread ([`Fake::spawn`]); when dropped, it stops
/// and its port is closed before the drop returns.
pub struct Threaded {
    pub fake: Arc<Fake>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Threaded {
    /// The kubeconfig file for `KUBECONFIG` (context namespace `shop`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }
}

impl std::ops::Deref for Threaded {
    type Target = Fake;
    fn deref(&self) -> &Fake {
        &self.fake
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A kubeconfig with one cluster at `server`, a token user and namespace `shop`.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"{server}\"}}
users:
- name: tester
  user: {{token: test-token}}
contexts:
- name: fake
  context: {{cluster: fake, user: tester, namespace: shop}}
current-context: fake
"
    )
}
