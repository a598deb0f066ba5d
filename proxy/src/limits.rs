//! DestinationRule `connectionPool` limits with Envoy's circuit-breaker meaning:
//! at most `tcp.maxConnections` requests in flight on HTTP/1 connections (one
//! request per connection), at most `http.http1MaxPendingRequests` waiting for
//! one, and at most `http.http2MaxRequests` in flight overall. A request over a
//! limit is answered 503 with response flag `UO` at once, never queued without
//! bound.
//!
//! The settings ([`Limits`]) are config and live in the snapshot; the counts
//! ([`PoolState`]) are runtime state and live in the cluster's entry of the
//! runtime table (the `state` module), so a config push neither forgets what is
//! in flight nor lets a queued request lose its place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mesh_api::networking::{ConnectionPoolSettings, DestinationRuleSpec};
use tokio::sync::Notify;

/// A cluster's connection-pool settings (`usize::MAX`: no limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    max_connections: usize,
    max_pending: usize,
    max_requests: usize,
}

impl Limits {
    /// No limit at all: what a cluster without `connectionPool` counts under.
    pub const NONE: Limits = Limits {
        max_connections: usize::MAX,
        max_pending: usize::MAX,
        max_requests: usize::MAX,
    };
}

/// A cluster's admission counts. Every request to the cluster is counted,
/// limited or not, so that limits set by a later push count what was already
/// in flight.
#[derive(Debug, Default)]
pub struct PoolState {
    /// Admitted requests (HTTP/1 and HTTP/2), including those still queued.
    requests: AtomicUsize,
    /// HTTP/1 requests holding a connection slot.
    connections: AtomicUsize,
    /// HTTP/1 requests waiting for a slot.
    pending: AtomicUsize,
    /// Woken whenever a connection slot is given back.
    freed: Notify,
}

/// Held for as long as a request is in flight: gives its counts back on drop.
#[derive(Debug)]
pub struct Permit {
    pool: Arc<PoolState>,
    connection: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.connection {
            self.pool.connections.fetch_sub(1, Ordering::AcqRel);
            self.pool.freed.notify_waiters();
        }
        self.pool.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a request as queued; dropped when it gets a slot or gives up (the
/// client went away while waiting), so the queue never leaks a place.
struct Queued<'a>(&'a PoolState);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

fn positive(v: Option<i32>) -> Option<usize> {
    v.filter(|n| *n > 0).map(|n| n as usize)
}

/// Adds one to `n` if that keeps it at most `max`.
fn take(n: &AtomicUsize, max: usize) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        (v < max).then_some(v + 1)
    })
    .is_ok()
}

impl Limits {
    /// The limits a DestinationRule sets for `port` (port-level settings win),
    /// or `None` when it sets none.
    pub fn from_rule(rule: Option<&DestinationRuleSpec>, port: u16) -> Option<Limits> {
        let tp = rule?.traffic_policy.as_ref()?;
        let port_level = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
            .and_then(|p| p.connection_pool.as_ref());
        Limits::from_settings(port_level.or(tp.connection_pool.as_ref())?)
    }

    pub fn from_settings(cp: &ConnectionPoolSettings) -> Option<Limits> {
        let max_conn = positive(cp.tcp.as_ref().and_then(|t| t.max_connections));
        let max_pending = positive(cp.http.as_ref().and_then(|h| h.http1_max_pending_requests));
        let max_requests = positive(cp.http.as_ref().and_then(|h| h.http2_max_requests));
        if max_conn.is_none() && max_pending.is_none() && max_requests.is_none() {
            return None;
        }
        Some(Limits {
            max_connections: max_conn.unwrap_or(usize::MAX),
            max_pending: max_pending.unwrap_or(usize::MAX),
            max_requests: max_requests.unwrap_or(usize::MAX),
        })
    }
}

impl PoolState {
    /// Admits a request under `limits` (waiting for an HTTP/1 connection slot
    /// if allowed to queue), or `None`: overflow.
    ///
    /// The limits come from the snapshot the request runs on, the counts from
    /// the runtime table: after a push that changes the limits, new requests
    /// are judged by the new limits against everything still in flight (a
    /// lowered limit admits nothing until enough requests finish; in-flight
    /// ones are never cut off). Starting the counts afresh instead would let
    /// the upstream see the old and the new limit's worth of requests at once.
    pub async fn admit(self: &Arc<Self>, limits: &Limits, http1: bool) -> Option<Permit> {
        if !take(&self.requests, limits.max_requests) {
            return None;
        }
        let mut permit = Permit {
            pool: self.clone(),
            connection: false,
        };
        if !http1 {
            return Some(permit);
        }
        // A free slot goes to the queue first (Envoy's pending queue is FIFO).
        if self.pending.load(Ordering::Acquire) == 0
            && take(&self.connections, limits.max_connections)
        {
            permit.connection = true;
            return Some(permit);
        }
        if !take(&self.pending, limits.max_pending) {
            return None;
        }
        let _queued = Queued(self);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check: a slot given back in between wakes us.
            freed.as_mut().enable();
            if take(&self.connections, limits.max_connections) {
                permit.connection = true;
                return Some(permit);
            }
            freed.await;
        }
    }

    /// Requests waiting for a connection slot (Envoy's `upstream_rq_pending_active`).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Requests admitted and not yet finished, queued ones included.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(json: serde_json::Value) -> Limits {
        Limits::from_settings(&serde_json::from_value(json).unwrap()).unwrap()
    }

    /// A pool and its limits: `admit(http1)` as the data path calls it.
    struct Pool(Arc<PoolState>, Limits);

    impl Pool {
        fn new(json: serde_json::Value) -> Pool {
            Pool(Arc::default(), limits(json))
        }
        async fn admit(&self, http1: bool) -> Option<Permit> {
            self.0.admit(&self.1, http1).await
        }
    }

    #[tokio::test]
    async fn one_connection_one_pending() {
        let l = Pool::new(
            serde_json::json!({"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}),
        );
        let a = l.admit(true).await.expect("first gets the connection");
        // The second waits for it; a third overflows while the second is pending.
        let second = l.admit(true);
        tokio::pin!(second);
        assert!(
            futures_poll_once(&mut second).await.is_none(),
            "second is queued"
        );
        assert!(l.admit(true).await.is_none(), "third overflows");
        drop(a);
        assert!(
            second.await.is_some(),
            "second proceeds when the first finishes"
        );
    }

    #[tokio::test]
    async fn a_queued_request_that_gives_up_frees_its_place() {
        let l = Pool::new(
            serde_json::json!({"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}),
        );
        let _a = l.admit(true).await.unwrap();
        {
            let second = l.admit(true);
            tokio::pin!(second);
            assert!(futures_poll_once(&mut second).await.is_none());
            assert_eq!((l.0.pending(), l.0.requests()), (1, 2));
        }
        assert_eq!((l.0.pending(), l.0.requests()), (0, 1));
        let third = l.admit(true);
        tokio::pin!(third);
        assert!(
            futures_poll_once(&mut third).await.is_none(),
            "queued in the freed place, not overflowed"
        );
    }

    #[tokio::test]
    async fn max_requests_bounds_http2() {
        let l = Pool::new(serde_json::json!({"http": {"http2MaxRequests": 2}}));
        let a = l.admit(false).await.unwrap();
        let _b = l.admit(false).await.unwrap();
        assert!(l.admit(false).await.is_none());
        drop(a);
        assert!(l.admit(false).await.is_some());
        assert!(Limits::from_settings(&Default::default()).is_none());
    }

    /// Polls a future once; `Some` if it completed.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
