//! DestinationRule `connectionPool` limits with Envoy's circuit-breaker meaning:
//! at most `tcp.maxConnections` requests in flight on HTTP/1 connections (one
//! request per connection), at most `http.http1MaxPendingRequests` waiting for
//! one, and at most `http.http2MaxRequests` in flight overall. A request over a
//! limit is answered 503 with response flag `UO` at once, never queued without
//! bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mesh_api::networking::{ConnectionPoolSettings, DestinationRuleSpec};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct Limits {
    connections: Arc<Semaphore>,
    max_pending: usize,
    pending: AtomicUsize,
    max_requests: usize,
    active: Arc<AtomicUsize>,
}

/// Held for as long as a request is in flight.
pub struct Permit {
    _conn: Option<OwnedSemaphorePermit>,
    active: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

fn positive(v: Option<i32>) -> Option<usize> {
    v.filter(|n| *n > 0).map(|n| n as usize)
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
            connections: Arc::new(Semaphore::new(max_conn.unwrap_or(Semaphore::MAX_PERMITS))),
            max_pending: max_pending.unwrap_or(usize::MAX),
            pending: AtomicUsize::new(0),
            max_requests: max_requests.unwrap_or(usize::MAX),
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Admits a request (waiting for an HTTP/1 connection slot if allowed to
    /// queue), or `None`: overflow.
    pub async fn admit(&self, http1: bool) -> Option<Permit> {
        if self.active.fetch_add(1, Ordering::AcqRel) >= self.max_requests {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let mut permit = Permit {
            _conn: None,
            active: self.active.clone(),
        };
        if !http1 {
            return Some(permit);
        }
        let conn = match self.connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                let p = self.connections.clone().acquire_owned().await;
                self.pending.fetch_sub(1, Ordering::AcqRel);
                p.ok()?
            }
        };
        permit._conn = Some(conn);
        Some(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(json: serde_json::Value) -> Limits {
        Limits::from_settings(&serde_json::from_value(json).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn one_connection_one_pending() {
        let l = limits(
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
    async fn max_requests_bounds_http2() {
        let l = limits(serde_json::json!({"http": {"http2MaxRequests": 2}}));
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
