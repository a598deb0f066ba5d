//! `mesh-proxy`: the sidecar data plane.
//!
//! It sits in the pod's network namespace behind the redirect rules: outbound
//! connections arrive on 15001 and inbound ones on 15006, each with its original
//! destination. HTTP/1.1 and HTTP/2 (h2c) are proxied request by request with
//! load balancing over the snapshot's endpoints; other traffic is carried as
//! opaque TCP; undeclared ports are sniffed without holding back server-first
//! protocols. With a CA credential (`--ca-token-file`) it holds a SPIFFE workload
//! certificate and speaks Istio-style mTLS between sidecars ([`mtls`]): automatic
//! towards meshed endpoints, PeerAuthentication modes inbound, XFCC to the app.
//! It reports Istio's metrics, serves health and admin endpoints, and
//! drains gracefully. Configuration is an immutable snapshot swapped atomically
//! ([`snapshot`]), from the agent or a standalone file ([`source`]).
//!
//! Inbound, every request or TCP connection first passes [`inbound::gate`]: path
//! normalization (`--path-normalization`, Istio's `meshConfig.pathNormalization`
//! modes, default `MERGE_SLASHES`), the workload's AuthorizationPolicies
//! ([`authz`]: 403 `RBAC: access denied`, or the TCP connection closed), then
//! the local rate limit ([`ratelimit`]).
//!
//! # Local rate limiting
//!
//! Set the pod annotation `ratelimit.mesh.io/local` (passed to the proxy as
//! `MESH_LOCAL_RATE_LIMIT`, or `--local-rate-limit`) to one or more token
//! buckets, Envoy's `local_ratelimit` without an EnvoyFilter:
//!
//! ```text
//! ratelimit.mesh.io/local: "100/s"               # 100 requests/s for the workload
//! ratelimit.mesh.io/local: "10/500ms,burst=20"   # 10 tokens per 500 ms, 20 banked
//! ratelimit.mesh.io/local: "50/s;5/s,port=9080"  # and port 9080 at most 5/s
//! ```
//!
//! Over the limit, inbound HTTP requests get `429 local_rate_limited` with
//! `x-local-rate-limit: true`; metrics and access log show response flag `RL`.
//! The limit is per proxy (per pod), like Envoy's local rate limit.
//!
//! # Gateway mode
//!
//! `mesh-proxy router` (Istio's `proxy router`, what the injector's `gateway`
//! template runs) captures nothing: it subscribes as a router and binds the
//! ports of the Gateway servers in its view ([`gateway`]), choosing the server
//! by SNI or `:authority`, terminating or passing through TLS, and routing
//! with the same code as the sidecar's outbound path. Admin, health, metrics
//! and drain are the sidecar's.
//!
//! [`Proxy::bind`] binds every listener first (so a bad address fails before
//! anything runs) and reports what it bound; [`Proxy::run`] serves until told to
//! stop.

pub mod access_log;
pub mod admin;
pub mod app_metrics;
pub mod app_probe;
pub mod authz;
pub mod body;
pub mod byaddr;
pub mod config;
pub mod config_dump;
pub mod conn;
pub mod detect;
pub mod direction;
pub mod downstream;
pub mod endpoint;
pub mod gateway;
pub mod h1client;
pub mod h1fields;
pub mod h1guard;
pub mod h1peer;
mod h1repeat;
pub mod h1scan;
pub mod h1server;
pub mod h2scan;
pub mod inbound;
pub mod lb;
pub mod limits;
pub mod metrics;
pub mod mtls;
pub mod orig_dst;
pub mod outbound;
pub mod outlier;
pub mod peer;
pub mod penalty;
pub mod pool;
pub mod ratelimit;
pub mod record;
pub mod relay;
pub mod route;
pub mod sched;
pub mod server;
pub mod shared;
pub mod snapshot;
pub mod sni;
pub mod source;
pub mod state;
pub mod tcp;
pub mod trace;
pub mod upstream;
pub mod util;
pub mod wait;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::admin::AdminState;
use crate::app_probe::Probers;
use crate::config::{Config, Source};
use crate::direction::Direction;
use crate::shared::Shared;

/// The addresses a proxy actually bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The capture listeners; `None` for a gateway (`router`).
    pub outbound: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub health: SocketAddr,
    pub prometheus: SocketAddr,
    pub status: SocketAddr,
}

pub struct Proxy {
    shared: Arc<Shared>,
    probers: Arc<Probers>,
    app_metrics: Option<Arc<app_metrics::AppMetrics>>,
    outbound: Option<TcpListener>,
    inbound: Option<TcpListener>,
    admin: TcpListener,
    health: TcpListener,
    prometheus: TcpListener,
    status: TcpListener,
}

fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    mesh_api::listen::listen(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the {what} listener on {addr}: {e}"),
        )
    })
}

impl Proxy {
    /// Binds every listener. `probers` are the app probes (`ISTIO_KUBE_APP_PROBERS`).
    pub async fn bind(cfg: Config, probers: Probers) -> std::io::Result<Proxy> {
        Proxy::bind_with(cfg, probers, None).await
    }

    /// Like [`Proxy::bind`], also merging the app's metrics into the status port.
    pub async fn bind_with(
        cfg: Config,
        probers: Probers,
        app_metrics: Option<app_metrics::AppMetrics>,
    ) -> std::io::Result<Proxy> {
        // A gateway captures nothing: its listeners come from its view.
        let sidecar = cfg.mode == config::Mode::Sidecar;
        let outbound = match sidecar {
            true => Some(bind(cfg.outbound, "outbound")?),
            false => None,
        };
        let inbound = match sidecar {
            true => Some(bind(cfg.inbound, "inbound")?),
            false => None,
        };
        Ok(Proxy {
            outbound,
            inbound,
            admin: bind(cfg.admin, "admin")?,
            health: bind(cfg.health, "health")?,
            prometheus: bind(cfg.prometheus, "prometheus")?,
            status: bind(cfg.status, "status")?,
            shared: Shared::new(cfg),
            probers: Arc::new(probers),
            app_metrics: app_metrics.map(Arc::new),
        })
    }

    pub fn bound(&self) -> Bound {
        let a = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
        Bound {
            outbound: self.outbound.as_ref().map(a),
            inbound: self.inbound.as_ref().map(a),
            admin: a(&self.admin),
            health: a(&self.health),
            prometheus: a(&self.prometheus),
            status: a(&self.status),
        }
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `terminate` resolves (then drains: readiness fails, inbound
    /// keeps accepting for the drain grace, then in-flight work gets up to the
    /// termination drain duration; outbound keeps working meanwhile) or until
    /// `/quitquitquit` (exits promptly).
    pub async fn run(self, terminate: impl std::future::Future<Output = ()>) {
        let shared = self.shared;
        let quit = Arc::new(tokio::sync::Notify::new());
        let cancel = tokio_util::sync::CancellationToken::new();
        if let Some(src) = shared.cfg.cert.clone() {
            tokio::spawn(mtls::certs::run(src, shared.tls.clone(), cancel.clone()));
        }
        let source = match shared.cfg.source.clone() {
            Source::ViewFile(p) => tokio::spawn(source::watch_view_file(p, shared.clone())),
            Source::Agent(addr) => {
                let transport = shared.cfg.agent_transport.clone();
                source::follow_agent(addr, transport, shared.clone(), cancel.clone());
                tokio::spawn(async {})
            }
            Source::ConfigDir(dir) => {
                if let Err(e) =
                    source::embedded_agent(dir.clone(), shared.clone(), cancel.clone()).await
                {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot start the embedded agent");
                }
                tokio::spawn(async {})
            }
        };
        let st = AdminState {
            shared: shared.clone(),
            probers: self.probers,
            app_metrics: self.app_metrics,
            quit: quit.clone(),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(admin::serve(
            self.admin,
            admin::admin_router(st.clone()),
            stopped(),
        ));
        tasks.spawn(admin::serve(
            self.health,
            admin::health_router(st.clone()),
            stopped(),
        ));
        tasks.spawn(admin::serve(
            self.prometheus,
            admin::prometheus_router(st.clone()),
            stopped(),
        ));
        tasks.spawn(admin::serve(
            self.status,
            admin::status_router(st),
            stopped(),
        ));
        let drain = shared.cfg.drain_duration;
        if let Some(outbound) = self.outbound {
            tasks.spawn(server::capture(
                outbound,
                shared.clone(),
                Direction::Outbound,
                stopped(),
                drain,
            ));
        }
        let grace = shared.cfg.drain_grace;
        let sh = shared.clone();
        // Listeners facing callers (inbound, a gateway's ports) keep accepting
        // for the drain grace, as Envoy's drain does.
        let inbound_stop = async move {
            sh.drained().await;
            tokio::time::sleep(grace).await;
        };
        let inbound = match self.inbound {
            Some(inbound) => tokio::spawn(server::capture(
                inbound,
                shared.clone(),
                Direction::Inbound,
                inbound_stop,
                drain,
            )),
            None => tokio::spawn(gateway::listeners::run(shared.clone(), inbound_stop)),
        };
        tokio::select! {
            _ = terminate => {
                shared.start_drain();
                // Inbound finishes after the grace plus at most the drain duration.
                let _ = inbound.await;
                let deadline = tokio::time::Instant::now() + drain;
                while shared.active_connections.load(std::sync::atomic::Ordering::Acquire) > 0
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
            _ = quit.notified() => {}
        }
        let _ = stop_tx.send(true);
        cancel.cancel();
        source.abort();
        tasks.abort_all();
    }
}
