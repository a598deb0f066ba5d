//! On-demand discovery on the outbound path: a destination the view does not
//! have (a captured address, an HTTP authority) is asked about once over the
//! sync stream before it is treated as outside the mesh. The answer comes after
//! the view that carries the service, so the snapshot to use is the store's
//! current one. At most [`LOOKUP_WAIT`]; no answer leaves the old snapshot.
//!
//! Every outbound connection and request marks the service it goes to as used
//! ([`in_use`]), so what was found on demand ages out of the view only once
//! the proxy stops calling it (`--on-demand-idle`).

use std::sync::Arc;
use std::time::Duration;

use mesh_api::syncidle::InUse;
use mesh_api::synclookup::Answer;

use crate::shared::Shared;
use crate::snapshot::Snapshot;

/// How long a first connection or request waits for a lookup.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// Asks about `target` (an IP, or a host with or without port); returns the
/// snapshot to serve with.
pub async fn look_up(shared: &Shared, target: &str, snap: Arc<Snapshot>) -> Arc<Snapshot> {
    let Some(client) = shared.lookups.get() else {
        return snap;
    };
    match tokio::time::timeout(LOOKUP_WAIT, client.lookup(target)).await {
        Ok(Answer::Found(host)) => {
            tracing::debug!(%target, %host, "on-demand lookup found a service");
            shared.store.load().unwrap_or(snap)
        }
        Ok(answer) => {
            tracing::debug!(%target, ?answer, "on-demand lookup: not in the mesh");
            snap
        }
        Err(_) => {
            tracing::debug!(%target, "on-demand lookup timed out");
            snap
        }
    }
}

/// Marks `host` (a cluster's host) used now; for a service found on demand,
/// the guard keeps it in the view until dropped (hold it for the life of a
/// connection or request). Lock-free; `None` for every other host.
pub fn in_use(shared: &Shared, host: &str) -> Option<InUse> {
    shared.lookups.get()?.touch(host)
}
