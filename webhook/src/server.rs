//! The HTTPS admission server: axum routes (`POST /inject`, `POST /validate`,
//! `GET /version`, `/healthz`, `/readyz`, `/metrics`)
//! served by hyper over rustls on a listener the caller bound. Slow or hostile
//! clients are bounded: TLS handshake and header read timeouts, a body read
//! timeout, a 6 MiB body limit. Shuts down gracefully on the given signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_api::meshconfig::MeshConfig;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::admission::review;
use crate::inject::InjectContext;
pub use crate::limits::Limits;
use crate::metrics::{InjectionMetrics, Outcome};

/// Shared state of the handlers: the mesh config in force (swappable) and limits.
pub struct AppState {
    mesh: RwLock<Arc<MeshConfig>>,
    pub ctx: InjectContext,
    pub limits: Limits,
    /// Injection requests by outcome (`GET /metrics`).
    pub injections: InjectionMetrics,
}

impl AppState {
    pub fn new(mesh: MeshConfig, limits: Limits) -> Arc<Self> {
        Arc::new(AppState {
            mesh: RwLock::new(Arc::new(mesh)),
            ctx: InjectContext::default(),
            limits,
            injections: InjectionMetrics::default(),
        })
    }

    pub fn mesh(&self) -> Arc<MeshConfig> {
        self.mesh.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_mesh(&self, m: MeshConfig) {
        *self.mesh.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/inject", post(inject))
        .route("/validate", post(validate))
        .route("/version", get(version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn plain(code: StatusCode, msg: String) -> Response {
    (code, msg).into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a JSON request body within the limits, or the error response to send.
async fn read_json_body(
    lim: Limits,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, Response> {
    if !is_json(headers) {
        let got = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return Err(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, got {got:?}\n"),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > lim.max_body_bytes as u64) {
        return Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body of {} bytes exceeds the {} byte limit\n",
                declared.unwrap_or(0),
                lim.max_body_bytes
            ),
        ));
    }
    let collected = tokio::time::timeout(
        lim.body_timeout,
        Limited::new(body, lim.max_body_bytes).collect(),
    )
    .await;
    let bytes = match collected {
        Err(_) => {
            return Err(plain(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n".into(),
            ))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds the {} byte limit\n", lim.max_body_bytes),
            ))
        }
        Ok(Err(e)) => {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read body: {e}\n"),
            ))
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    if bytes.is_empty() {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "empty body: expected an AdmissionReview\n".into(),
        ));
    }
    Ok(bytes)
}

async fn inject(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_json_body(st.limits, &headers, body).await {
        Ok(b) => b,
        Err(resp) => {
            st.injections.record(Outcome::Failed);
            return resp;
        }
    };
    let mesh = st.mesh();
    let span = tracing::info_span!(
        "admission",
        uid = tracing::field::Empty,
        allowed = tracing::field::Empty,
        ops = tracing::field::Empty
    );
    let r = span.in_scope(|| review(&bytes, &mesh, &st.ctx));
    span.record("uid", r.uid.as_str());
    span.record("allowed", r.allowed);
    span.record("ops", r.patch_ops);
    st.injections.record(Outcome::of(&r));
    span.in_scope(|| match (&r.message, r.allowed) {
        (Some(m), false) => tracing::warn!(message = %m, "admission denied"),
        (m, true) => tracing::debug!(message = ?m, "admission answered"),
        (None, false) => {}
    });
    (StatusCode::OK, Json(r.body)).into_response()
}

/// Serves HTTPS on `listener` until `shutdown` resolves, then lets open
/// connections finish (bounded by `drain`).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = state.limits;
    let app = router(state);
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of fds and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(
            async move {
                let tls =
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(tracing::info_span!("conn", %peer)),
        );
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10s; closing");
    }
    Ok(())
}

/// Binds nothing itself: reports the address of the listener it was given.
pub fn local_addr(listener: &TcpListener) -> std::io::Result<SocketAddr> {
    listener.local_addr()
}

async fn validate(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_json_body(st.limits, &headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let span = tracing::info_span!(
        "validation",
        uid = tracing::field::Empty,
        allowed = tracing::field::Empty
    );
    let _g = span.enter();
    match crate::validate::review(&bytes) {
        Err(e) => {
            tracing::warn!(error = %e, "malformed validation review");
            plain(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
        Ok(v) => {
            span.record("uid", v.uid.as_str());
            span.record("allowed", v.allowed);
            if let Some(m) = &v.message {
                tracing::info!(message = %m, "configuration refused");
            }
            (StatusCode::OK, Json(v.body)).into_response()
        }
    }
}

/// `GET /metrics`: injection counters (Prometheus text).
async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.injections.render(),
    )
        .into_response()
}

/// `GET /version`: what `meshctl version` reports for the webhook.
async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "component": "mesh-webhook",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}
