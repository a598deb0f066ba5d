//! A gateway's listeners follow its view: each applied snapshot's ports are
//! bound on `--bind`, ports no longer listed stop accepting and drain their
//! connections, and a port that stays keeps its socket and its connections
//! (they read the new snapshot on their next request). A port that cannot be
//! bound gets one log line and a counter; the other ports keep serving, and
//! the bind is tried again with the next view. Every port runs the sidecar's
//! accept loop ([`crate::server::accept_loop`]): connection cap, drain and the
//! HTTP hardening are the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::server::{Accepted, Listener};
use crate::shared::Shared;

/// The ports to add and remove to go from `have` to `want`.
pub fn plan(have: &BTreeSet<u16>, want: &BTreeSet<u16>) -> (Vec<u16>, Vec<u16>) {
    (
        want.difference(have).copied().collect(),
        have.difference(want).copied().collect(),
    )
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Keeps the listeners equal to the current snapshot's ports until `stop`
/// resolves; then every port stops accepting and drains (at most the
/// termination drain duration).
pub async fn run(shared: Arc<Shared>, stop: impl std::future::Future<Output = ()>) {
    let mut running: BTreeMap<u16, Running> = BTreeMap::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let changed = shared.store.notified();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        if let Some(snap) = shared.store.load() {
            if !shared.gateway.is_applied(snap.version) {
                reconcile(&shared, &snap, &mut running).await;
                shared.gateway.set_applied(snap.version);
            }
        }
        tokio::select! {
            _ = changed => {}
            _ = &mut stop => break,
        }
    }
    for r in running.values() {
        r.stop.cancel();
    }
    for (_, r) in running {
        let _ = r.task.await;
    }
}

async fn reconcile(
    shared: &Arc<Shared>,
    snap: &crate::snapshot::Snapshot,
    running: &mut BTreeMap<u16, Running>,
) {
    let want: BTreeSet<u16> = snap
        .gateway
        .as_ref()
        .map(|g| g.ports.keys().copied().collect())
        .unwrap_or_default();
    let have: BTreeSet<u16> = running.keys().copied().collect();
    let (add, remove) = plan(&have, &want);
    let mut status = shared.gateway.ports();
    for port in remove {
        if let Some(r) = running.remove(&port) {
            // The accept loop closes the socket, then drains its connections.
            r.stop.cancel();
            tracing::info!("gateway listener on port {port} removed");
        }
        status.remove(&port);
    }
    status.retain(|p, _| want.contains(p));
    for port in add {
        // `--bind`, as the health and metrics listeners use.
        let addr = SocketAddr::new(shared.cfg.health.ip(), port);
        // The kernel's full accept queue, as Envoy's gateway listeners have.
        match mesh_api::listen::listen(addr) {
            Ok(l) => {
                let stop = CancellationToken::new();
                let serve = move |a: Accepted| {
                    super::conn::serve(a.stream, a.peer, a.local, port, a.shared, a.watcher)
                };
                let task = tokio::spawn(crate::server::accept_loop(
                    l,
                    shared.clone(),
                    Listener::Gateway(port),
                    stop.clone().cancelled_owned(),
                    shared.cfg.drain_duration,
                    serve,
                ));
                running.insert(port, Running { stop, task });
                status.insert(port, Ok(addr));
                tracing::info!("gateway listener bound on {addr}");
            }
            Err(e) => {
                shared
                    .metrics
                    .gateway
                    .bind_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "gateway listener cannot bind {addr}: {e}; the other listeners keep serving"
                );
                status.insert(port, Err(e.to_string()));
            }
        }
    }
    shared.gateway.set_ports(status);
}
