//! Wires a source, the pipeline, the stream server and the debug server together.
//!
//! The CA is on when it can authenticate callers (`--ca-tokens`, or TokenReview
//! in Kubernetes mode). Then 15012 speaks TLS with a serving certificate from
//! the mesh CA, the `cacerts` folder is followed for rotations and the root
//! bundle is published. Without CA, 15012 is plaintext and config-only.

use crate::compile::Snapshot;
use crate::config::Config;
use crate::server::{self, Shared};
use crate::source::Source;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot bind {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("mesh CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("issuing the 15012 serving certificate: {0}")]
    ServingCert(String),
}

/// A running agent: what it bound, its shared state, and its tasks.
pub struct Running {
    pub sync_addr: SocketAddr,
    pub debug_addr: SocketAddr,
    /// The optional plaintext config-only listener.
    pub plaintext_addr: Option<SocketAddr>,
    /// The optional readiness listener (`GET /ready`).
    pub ready_addr: Option<SocketAddr>,
    /// The serving certificate of the TLS sync port (None: plaintext, no CA).
    pub tls: Option<Arc<server::tls::ServerTls>>,
    pub shared: Arc<Shared>,
    source: JoinHandle<Result<(), crate::source::SourceError>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until shutdown or until the source fails.
    pub async fn wait(self) -> Result<(), AgentError> {
        let r = self.source.await;
        for t in self.tasks {
            let _ = t.await;
        }
        match r {
            Ok(r) => Ok(r?),
            Err(_) => Ok(()),
        }
    }
}

/// Builds (or loads) the CA, publishes its roots, and picks the authenticator:
/// TokenReview through `kube` when given, else the local tokens file. `None`
/// when there is no way to authenticate callers: no CA, plaintext 15012.
pub fn ca_service(
    cfg: &Config,
    kube: Option<kube::Client>,
) -> Result<Option<server::CaService>, AgentError> {
    if kube.is_none() && cfg.ca.ca_tokens.is_none() {
        return Ok(None);
    }
    let max_ttl = std::time::Duration::from_secs(cfg.ca.max_cert_ttl_secs);
    let ca = match &cfg.ca.ca_dir {
        Some(dir) => crate::ca::reload::load(dir, &cfg.trust_domain, max_ttl)?,
        None => crate::ca::Ca::self_signed(&cfg.trust_domain, max_ttl)?,
    };
    if let Some(out) = &cfg.ca.ca_root_out {
        ca.publish(out)?;
    }
    let auth = match (kube, &cfg.ca.ca_tokens) {
        (Some(client), _) => crate::ca::auth::Authenticator::Kubernetes {
            client,
            trust_domain: cfg.trust_domain.clone(),
        },
        (None, Some(file)) => crate::ca::auth::Authenticator::LocalTokens {
            file: file.clone(),
            trust_domain: cfg.trust_domain.clone(),
        },
        (None, None) => crate::ca::auth::Authenticator::None,
    };
    Ok(Some(server::CaService::new(ca, auth)))
}

/// Binds both listeners (the config must be validated), then starts everything,
/// with a CA authenticating callers by the local tokens file.
pub async fn start(
    cfg: &Config,
    source: Box<dyn Source>,
    shutdown: CancellationToken,
) -> Result<Running, AgentError> {
    let ca = ca_service(cfg, None)?;
    start_with_ca(cfg, source, ca, shutdown).await
}

/// Like [`start`], with a given CA service (Kubernetes: TokenReview).
pub async fn start_with_ca(
    cfg: &Config,
    source: Box<dyn Source>,
    ca: Option<server::CaService>,
    shutdown: CancellationToken,
) -> Result<Running, AgentError> {
    let (keep, settings) = watch::channel(Arc::new(cfg.settings()));
    let sd = shutdown.clone();
    // Keeps the settings channel open for the agent's lifetime.
    tokio::spawn(async move {
        sd.cancelled().await;
        drop(keep);
    });
    start_live(cfg, settings, source, ca, shutdown).await
}

/// [`start_with_ca`] with settings that follow the mesh config file.
pub async fn start_live(
    cfg: &Config,
    settings: watch::Receiver<Arc<crate::compile::Settings>>,
    source: Box<dyn Source>,
    ca: Option<server::CaService>,
    shutdown: CancellationToken,
) -> Result<Running, AgentError> {
    // The kernel's full accept queue: every proxy of the mesh reconnects at
    // once after an agent restart.
    let bind = |what, addr| {
        mesh_api::listen::listen(addr).map_err(|source| AgentError::Bind { what, addr, source })
    };
    let sync = bind("sync stream", cfg.listen)?;
    let debug = bind("debug", cfg.debug_listen)?;
    let sync_addr = sync.local_addr().map_err(|source| AgentError::Bind {
        what: "sync stream",
        addr: cfg.listen,
        source,
    })?;
    let debug_addr = debug.local_addr().map_err(|source| AgentError::Bind {
        what: "debug",
        addr: cfg.debug_listen,
        source,
    })?;
    let plain = match cfg.plaintext_listen {
        Some(addr) => Some(bind("plaintext config", addr)?),
        None => None,
    };
    let plaintext_addr = plain.as_ref().and_then(|l| l.local_addr().ok());
    let ready = cfg.ready_listen.map(|a| bind("readiness", a)).transpose()?;
    let ready_addr = ready.as_ref().and_then(|l| l.local_addr().ok());
    let ca = ca.map(Arc::new);
    let tls = match &ca {
        Some(ca) => Some(
            server::tls::ServerTls::new(
                ca,
                &cfg.ca.server_sans,
                std::time::Duration::from_secs(cfg.ca.server_cert_ttl_secs),
            )
            .map_err(AgentError::ServingCert)?,
        ),
        None => None,
    };
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let shared = Shared::with_ca(cfg.agent_name(), snap_rx, ca.clone());
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let mut tasks = vec![tokio::spawn(server::pipeline::run_live(
        ev_rx,
        settings,
        snap_tx,
        cfg.debounce(),
        shutdown.clone(),
    ))];
    let mode = match &tls {
        Some(t) => server::stream::Mode::Tls(t.clone()),
        None => server::stream::Mode::Plain { csr: true },
    };
    tasks.push(tokio::spawn(server::stream::serve(
        sync,
        shared.clone(),
        mode,
        shutdown.clone(),
    )));
    if let Some(plain) = plain {
        tasks.push(tokio::spawn(server::stream::serve(
            plain,
            shared.clone(),
            server::stream::Mode::Plain { csr: false },
            shutdown.clone(),
        )));
    }
    if let (Some(ca), Some(t)) = (&ca, &tls) {
        tasks.extend(ca_tasks(cfg, ca, t, &shutdown));
    }
    use server::debug::Endpoints;
    for (listener, which) in [(Some(debug), Endpoints::Debug), (ready, Endpoints::Ready)] {
        let Some(listener) = listener else { continue };
        let (s2, sd2) = (shared.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server::debug::serve(listener, which, s2, sd2).await {
                tracing::error!(error = %e, endpoints = ?which, "HTTP server failed");
            }
        }));
    }
    let source = tokio::spawn(source.run(ev_tx, shutdown));
    Ok(Running {
        sync_addr,
        ready_addr,
        debug_addr,
        plaintext_addr,
        tls,
        shared,
        source,
        tasks,
    })
}

/// What follows the CA in force: the serving certificate, the `cacerts` folder
/// watch, and root publication (file, Kubernetes ConfigMaps).
fn ca_tasks(
    cfg: &Config,
    ca: &Arc<server::CaService>,
    tls: &Arc<server::tls::ServerTls>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(
        tls.clone().renew(ca.clone(), shutdown.clone()),
    )];
    if let Some(dir) = &cfg.ca.ca_dir {
        tasks.push(tokio::spawn(crate::ca::reload::watch(
            dir.clone(),
            ca.clone(),
            std::time::Duration::from_millis(cfg.ca.ca_reload_ms),
            shutdown.clone(),
        )));
    }
    if let Some(out) = &cfg.ca.ca_root_out {
        tasks.push(tokio::spawn(crate::ca::publish::file(
            out.clone(),
            ca.subscribe(),
            shutdown.clone(),
        )));
    }
    if let crate::ca::auth::Authenticator::Kubernetes { client, .. } = &ca.auth {
        tasks.push(tokio::spawn(crate::ca::publish::configmaps(
            client.clone(),
            ca.subscribe(),
            std::time::Duration::from_secs(5),
            shutdown.clone(),
        )));
    }
    tasks
}
