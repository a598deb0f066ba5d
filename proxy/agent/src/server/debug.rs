//! `GET /debug/syncz`: per-proxy sync status and rejected resources, as JSON;
//! `GET /debug/gatewayapiz`: the `status` computed for every Gateway API object
//! the mesh owns, by `Kind/namespace/name`;
//! `GET /metrics`: the agent's counters (Prometheus text);
//! `GET /healthz/ready`: whether the first snapshot is out (also `GET /ready`
//! alone on the optional readiness listener, for the kubelet).

use super::access::{Auth, REASONS};
use super::shared::Shared;
use axum::{extract::State, routing::get, Json, Router};
use mesh_api::syncapi::Syncz;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The current `/debug/syncz` document.
pub fn syncz(shared: &Shared) -> Syncz {
    let snap = shared.snapshots.borrow().clone();
    Syncz {
        agent: shared.agent.clone(),
        version: snap.version,
        proxies: shared.tracker.statuses(&shared.agent),
        rejected: snap.rejected.clone(),
    }
}

/// The `/debug/gatewayapiz` document: `{"Kind/ns/name": status}`.
pub fn gateway_api_statuses(shared: &Shared) -> serde_json::Value {
    let snap = shared.snapshots.borrow().clone();
    serde_json::Value::Object(
        snap.gateway_api_status
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// The agent's Prometheus text: refused subscriptions by reason,
/// authenticated ones by credential, and istiod's push metrics.
pub fn metrics(shared: &Shared) -> String {
    let mut out = String::from(
        "# HELP mesh_agent_subscriptions_refused_total Config subscriptions refused, by reason.\n\
         # TYPE mesh_agent_subscriptions_refused_total counter\n",
    );
    for r in REASONS {
        out.push_str(&format!(
            "mesh_agent_subscriptions_refused_total{{reason=\"{r}\"}} {}\n",
            shared.refusals.get(r)
        ));
    }
    out.push_str(
        "# HELP mesh_agent_subscriptions_total Config subscriptions authenticated on the TLS port, by credential.\n\
         # TYPE mesh_agent_subscriptions_total counter\n",
    );
    for a in [Auth::Token, Auth::Certificate, Auth::Both] {
        out.push_str(&format!(
            "mesh_agent_subscriptions_total{{auth=\"{}\"}} {}\n",
            a.label(),
            shared.accepted.get(a)
        ));
    }
    out.push_str(&shared.xds.render(shared.tracker.connected()));
    out
}

/// `GET /healthz/ready` (and `/ready`): `200` once the first snapshot is
/// published (the source synced, see `pipeline`), `503` while proxies would
/// still wait for their first view, as istiod is not ready before its
/// informers sync.
async fn ready(State(shared): State<Arc<Shared>>) -> (axum::http::StatusCode, &'static str) {
    if shared.snapshots.borrow().version > 0 {
        (axum::http::StatusCode::OK, "ok")
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the config source's first sync\n",
        )
    }
}

async fn handler(State(shared): State<Arc<Shared>>) -> Json<Syncz> {
    Json(syncz(&shared))
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Endpoints {
    /// Everything above, on the loopback debug port.
    Debug,
    /// `GET /ready` alone: the kubelet's readiness probe, on an address it
    /// can reach.
    Ready,
}

/// Serves `which` endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    which: Endpoints,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = match which {
        Endpoints::Ready => Router::new().route("/ready", get(ready)),
        Endpoints::Debug => Router::new()
            .route("/debug/syncz", get(handler))
            .route(
                "/debug/gatewayapiz",
                get(|State(s): State<Arc<Shared>>| async move { Json(gateway_api_statuses(&s)) }),
            )
            .route(
                "/metrics",
                get(|State(s): State<Arc<Shared>>| async move { metrics(&s) }),
            )
            .route("/healthz/ready", get(ready))
            .route("/version", get(|| async { axum::Json(serde_json::json!({"component": "mesh-agent", "version": env!("CARGO_PKG_VERSION")})) })),
    }
    .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
