//! The proxy's own endpoints: admin on 127.0.0.1:15000 (config dump with the
//! compiled tables of [`crate::config_dump`], server info, clusters, stats, drain,
//! quit), `/healthz/ready` on 15021 (ready once the first snapshot
//! is applied, not ready while draining), Prometheus on 15090, and the status
//! port 15020 (merged metrics, rewritten application probes, `/quitquitquit`,
//! `/drain`). The status port listens on every address (kubelet and Prometheus
//! reach it from outside the pod), so its state-changing endpoints answer only
//! callers on loopback, as Istio's agent does: any other caller gets 403.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::app_probe::Probers;
use crate::shared::Shared;

#[derive(Clone)]
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub probers: Arc<Probers>,
    pub app_metrics: Option<Arc<crate::app_metrics::AppMetrics>>,
    pub quit: Arc<tokio::sync::Notify>,
}

async fn ready(State(s): State<AdminState>) -> Response {
    if s.shared.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if s.shared.cfg.cert.is_some() && s.shared.tls.current().is_none() {
        // Like Istio: not ready until the workload certificate is there.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no workload certificate yet\n",
        )
            .into_response()
    } else if let Some(snap) = s.shared.store.load() {
        // A gateway is ready once the first view's listeners are bound.
        let router = s.shared.cfg.mode == crate::config::Mode::Router;
        if router && !s.shared.gateway.is_applied(snap.version) {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway listeners not bound yet\n",
            )
                .into_response()
        } else {
            (StatusCode::OK, "").into_response()
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no configuration received yet\n",
        )
            .into_response()
    }
}

/// The sidecar's own Prometheus text: request metrics, span export counters,
/// the CPU class.
fn own_metrics(s: &AdminState) -> String {
    let mut body = s.shared.metrics.render();
    body.push_str(&s.shared.tracer.render());
    body.push_str(&crate::sched::render());
    body
}

async fn prometheus(State(s): State<AdminState>) -> Response {
    let body = own_metrics(&s);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// The status port's metrics: the sidecar's own, followed by the app's when its
/// original `prometheus.io/*` annotations (saved by the injector in
/// `ISTIO_PROMETHEUS_ANNOTATIONS`) ask for scraping, so one scrape of 15020
/// works even when mTLS keeps Prometheus away from the app's port.
async fn merged_prometheus(State(s): State<AdminState>) -> Response {
    let mut body = own_metrics(&s);
    if let Some(app) = &s.app_metrics {
        match app.fetch().await {
            Ok(text) => {
                body.push_str(&text);
                if !body.ends_with('\n') {
                    body.push('\n');
                }
            }
            Err(e) => tracing::debug!(error = %e, "app metrics not merged"),
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

async fn config_dump(State(s): State<AdminState>) -> Response {
    let snap = s.shared.store.load();
    let body = serde_json::json!({
        "version": snap.as_ref().map(|s| s.version),
        "identity": {
            "pod": s.shared.cfg.pod,
            "namespace": s.shared.cfg.namespace,
            "serviceAccount": s.shared.cfg.service_account,
            "workload": &*s.shared.me.workload,
        },
        // Private keys never leave the proxy.
        "view": snap.as_ref().map(|s| crate::config_dump::redacted_view(&s.view)),
        // A newer view the proxy refused (NACKed): `version` above still runs.
        "rejected": s.shared.store.rejected(),
        "warnings": snap.as_ref().map(|s| &s.warnings),
        "compiled": snap.as_ref().map(|snap| crate::config_dump::compile(snap, &s.shared.state.load(), crate::config_dump::Ports {
            outbound: s.shared.cfg.outbound.port(),
            inbound: s.shared.cfg.inbound.port(),
            router: s.shared.cfg.mode == crate::config::Mode::Router,
        })),
    });
    axum::Json(body).into_response()
}

/// Envoy's `/server_info` shape, trimmed to what `meshctl version` shows.
async fn server_info(State(s): State<AdminState>) -> Response {
    let state = if s.shared.is_draining() {
        "DRAINING"
    } else if s.shared.store.is_ready() {
        "LIVE"
    } else {
        "PRE_INITIALIZING"
    };
    axum::Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "component": "mesh-proxy",
        "state": state,
        "node": {"pod": s.shared.cfg.pod, "namespace": s.shared.cfg.namespace},
        "configVersion": s.shared.store.load().map(|snap| snap.version),
    }))
    .into_response()
}

/// Envoy's `/certs`, reduced: the workload certificate in use.
async fn certs(State(s): State<AdminState>) -> Response {
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let body = match s.shared.tls.current() {
        Some(c) => serde_json::json!({
            "identity": c.identity.to_string(),
            "serialNumber": c.serial,
            "issuedAt": unix(c.issued_at),
            "notAfter": unix(c.not_after),
            "roots": c.roots,
            "rootSha256": c.root_sha256,
            "chainSha256": c.chain_sha256,
            "rotations": s.shared.tls.rotations.load(std::sync::atomic::Ordering::Relaxed),
            "rootUpdates": s.shared.tls.root_updates.load(std::sync::atomic::Ordering::Relaxed),
        }),
        None => serde_json::json!({"identity": null, "rotations": 0}),
    };
    axum::Json(body).into_response()
}

async fn clusters(State(s): State<AdminState>) -> Response {
    let mut out = String::new();
    if let Some(snap) = s.shared.store.load() {
        let table = s.shared.state.load();
        for c in snap.all_clusters() {
            // Envoy's names: requests waiting for a connection-pool slot, and
            // each endpoint's requests in flight.
            let pending = table.cluster(&c.name).map_or(0, |st| st.pool.pending());
            out.push_str(&format!("{}::rq_pending_active::{pending}\n", c.name));
            for e in c.endpoints.iter() {
                let active = table.endpoint(&c.name, e.addr).map_or(0, |st| st.active());
                out.push_str(&format!("{}::{}::rq_active::{active}\n", c.name, e.addr));
            }
        }
    }
    out.into_response()
}

async fn drain(State(s): State<AdminState>) -> Response {
    s.shared.start_drain();
    "OK\n".into_response()
}

async fn quit(State(s): State<AdminState>) -> Response {
    s.quit.notify_one();
    "OK\n".into_response()
}

async fn app_health(
    State(s): State<AdminState>,
    Path((container, kind)): Path<(String, String)>,
) -> Response {
    let key = format!("/app-health/{container}/{kind}");
    match s.probers.run(&key).await {
        None => (
            StatusCode::NOT_FOUND,
            format!("no probe registered for {key}\n"),
        )
            .into_response(),
        Some(Ok(())) => StatusCode::OK.into_response(),
        Some(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

pub fn admin_router(st: AdminState) -> Router {
    Router::new()
        .route("/config_dump", get(config_dump))
        .route("/server_info", get(server_info))
        .route("/clusters", get(clusters))
        .route("/certs", get(certs))
        .route("/stats/prometheus", get(prometheus))
        .route("/ready", get(ready))
        .route("/drain_listeners", post(drain))
        .route("/quitquitquit", post(quit))
        .with_state(st)
}

pub fn health_router(st: AdminState) -> Router {
    Router::new()
        .route("/healthz/ready", get(ready))
        .with_state(st)
}

pub fn prometheus_router(st: AdminState) -> Router {
    Router::new()
        .route("/stats/prometheus", get(prometheus))
        .with_state(st)
}

pub fn status_router(st: AdminState) -> Router {
    Router::new()
        .route("/stats/prometheus", get(merged_prometheus))
        .route("/healthz/ready", get(ready))
        .route(
            "/app-health/{container}/{kind}",
            get(app_health).post(app_health),
        )
        .route("/quitquitquit", post(quit))
        .route("/drain", post(drain))
        .route_layer(axum::middleware::from_fn(local_only_for_changes))
        .with_state(st)
}

/// Whether `ip` is a loopback address (IPv4-mapped IPv6 included).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Whether a request to the status port changes the proxy's state (drain,
/// exit) rather than reading it. Probes and metrics are reads, whatever the method.
pub fn changes_state(path: &str) -> bool {
    matches!(path, "/quitquitquit" | "/drain")
}

/// Refuses state-changing requests from anywhere but loopback: another pod
/// must not be able to drain or stop this sidecar.
async fn local_only_for_changes(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if changes_state(req.uri().path()) && !is_loopback(peer.ip()) {
        tracing::warn!(caller = %peer,
            "status port request {} refused: only allowed from localhost", req.uri().path());
        return (
            StatusCode::FORBIDDEN,
            "only requests from localhost are allowed\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// Serves `router` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(error = %e, "admin server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_callers_may_change_state() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.5",
            "0.0.0.0",
            "::",
            "fe80::1",
            "::ffff:10.0.0.5",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
        assert!(changes_state("/quitquitquit") && changes_state("/drain"));
        assert!(!changes_state("/healthz/ready") && !changes_state("/app-health/app/livez"));
        assert!(!changes_state("/stats/prometheus"));
    }
}
