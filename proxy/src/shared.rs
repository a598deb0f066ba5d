//! State shared by every listener of one proxy: configuration, the current
//! snapshot and the run-time state beside it, metrics, this workload's identity for telemetry, the upstream client
//! pools and the drain signal.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::{Metrics, Workload};
use crate::snapshot::Store;
use crate::upstream::Clients;

pub struct Shared {
    pub cfg: Config,
    pub store: Store,
    /// Endpoint and cluster state that outlasts snapshots ([`Shared::install`]).
    pub state: crate::state::Runtime,
    pub metrics: Metrics,
    /// This proxy's workload, as metrics label it.
    pub me: Arc<Workload>,
    /// The `x-mesh-peer-metadata` value describing this workload.
    pub me_header: http::HeaderValue,
    /// Peers' metadata headers, decoded once each.
    pub peers: crate::peer::PeerCache,
    /// Destinations without peer metadata, derived from endpoint labels once.
    pub endpoint_workloads: crate::peer::EndpointWorkloads,
    pub clients: Clients,
    /// Local rate limits of inbound requests (`--local-rate-limit`).
    pub rate_limits: crate::ratelimit::RateLimits,
    /// The workload certificate (mTLS), rotated in place.
    pub tls: Arc<crate::mtls::certs::TlsState>,
    /// A gateway's listeners (`router` mode).
    pub gateway: crate::gateway::ListenerState,
    draining: AtomicBool,
    drain_notify: tokio::sync::Notify,
    /// Connections currently being served (all listeners), for drain.
    pub active_connections: AtomicUsize,
    /// Peers whose connections were closed for abuse, refused for a while.
    pub penalty: crate::penalty::PenaltyBox,
    /// Span export ([`crate::trace`]).
    pub tracer: crate::trace::Tracer,
    /// The access log in force: `--access-log`, else the view's.
    pub access_log: crate::access_log::Live,
    /// The agent's sync client, for on-demand lookups (set when following an
    /// agent).
    pub lookups: std::sync::OnceLock<mesh_api::syncclient::Client>,
}

impl Shared {
    pub fn new(cfg: Config) -> Arc<Shared> {
        let label = |k: &str| cfg.labels.get(k).cloned();
        let app = label("app").unwrap_or_else(|| cfg.workload_name.clone());
        let version = label("version").unwrap_or_else(|| "unknown".into());
        let canonical = label(mesh_api::annotations::CANONICAL_NAME).unwrap_or_else(|| app.clone());
        let canonical_rev = label(mesh_api::annotations::CANONICAL_REVISION)
            .or_else(|| label("version"))
            .unwrap_or_else(|| "latest".into());
        let principal = format!(
            "spiffe://{}/ns/{}/sa/{}",
            cfg.trust_domain, cfg.namespace, cfg.service_account
        );
        let me = Arc::new(Workload {
            workload: Arc::from(cfg.workload_name.as_str()),
            namespace: Arc::from(cfg.namespace.as_str()),
            principal: Arc::from(principal.as_str()),
            app: Arc::from(app.as_str()),
            version: Arc::from(version.as_str()),
            canonical_service: Arc::from(canonical.as_str()),
            canonical_revision: Arc::from(canonical_rev.as_str()),
        });
        let me_header = crate::peer::encode(&me);
        let rate_limits = crate::ratelimit::RateLimits::new(&cfg.rate_limits);
        let tls = Arc::new(crate::mtls::certs::TlsState::default());
        let clients = Clients::new(cfg.instance_ip, tls.clone());
        let penalty =
            crate::penalty::PenaltyBox::new(cfg.instance_ip, crate::penalty::Policy::DEFAULT);
        let access_log = crate::access_log::Live::new(cfg.access_log);
        Arc::new(Shared {
            access_log,
            penalty,
            rate_limits,
            cfg,
            store: Store::default(),
            state: Default::default(),
            metrics: Metrics::default(),
            me,
            me_header,
            peers: Default::default(),
            endpoint_workloads: Default::default(),
            clients,
            tls,
            gateway: Default::default(),
            draining: AtomicBool::new(false),
            drain_notify: tokio::sync::Notify::new(),
            active_connections: AtomicUsize::new(0),
            tracer: Default::default(),
            lookups: Default::default(),
        })
    }

    /// Makes `snap` current. The run-time table joins it first, so a request
    /// on the new snapshot finds its clusters' and endpoints' kept state.
    pub fn install(&self, snap: crate::snapshot::Snapshot) {
        self.access_log
            .apply(self.cfg.access_log, snap.view.access_log.as_ref());
        self.state.join_then(snap, |snap| self.store.store(snap));
    }

    /// Whether a connection just accepted from `peer` may be served: not when
    /// the peer is penalized for abuse ([`crate::penalty`]; counted in
    /// `mesh_downstream_cx_penalized_total`). Every downstream accept loop asks.
    pub fn admit(&self, peer: std::net::IpAddr) -> bool {
        match self.penalty.refuses(peer) {
            None => true,
            Some(reason) => {
                self.metrics.conn.penalized(reason);
                false
            }
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts draining (idempotent).
    pub fn start_drain(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            tracing::info!("drain started");
            self.drain_notify.notify_waiters();
        }
    }

    /// Resolves once a drain has started.
    pub async fn drained(&self) {
        loop {
            let n = self.drain_notify.notified();
            if self.is_draining() {
                return;
            }
            n.await;
        }
    }
}

/// Counts a connection as active for as long as it lives.
pub struct ConnGuard(Arc<Shared>);

impl ConnGuard {
    pub fn new(shared: &Arc<Shared>) -> ConnGuard {
        shared.active_connections.fetch_add(1, Ordering::AcqRel);
        ConnGuard(shared.clone())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::AcqRel);
    }
}
