//! Sending one request to a cluster, with Istio's resilience semantics: the
//! load balancer picks an endpoint (skipping ejected ones), a failed attempt is
//! retried on another endpoint when the retry policy says so and the body can be
//! replayed (a streamed body is never retried), each attempt may have its own
//! timeout, the whole exchange has the route timeout, and every outcome feeds
//! outlier detection. Health, in-flight counts and the round-robin cursor are
//! the cluster's run-time state ([`crate::state::Bound`]), not the snapshot's.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use crate::body::Body;
use crate::lb::{self, RequestKeys};
use crate::outlier;
use crate::pool::{Checkin, Pool};
use crate::route::Retry;
use crate::snapshot::{Cluster, Endpoint, EndpointRef, Protocol};
use crate::state::{Bound, InFlight, Member};

/// Which failures are retried (Envoy's `retry_on` conditions).
#[derive(Debug, Clone, Default)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub connect_failure: bool,
    pub reset: bool,
    pub retriable_4xx: bool,
    pub status_codes: StatusSet,
}

/// A set of HTTP status codes (100–611) as a bitmap: a retry policy is built
/// per request, and this keeps it free of allocations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusSet([u64; 8]);

impl StatusSet {
    const FIRST: u16 = 100;

    fn slot(code: u16) -> Option<(usize, u64)> {
        let i = usize::from(code.checked_sub(Self::FIRST)?);
        (i < 512).then(|| (i / 64, 1u64 << (i % 64)))
    }

    /// Adds `code`; codes outside 100–611 are not HTTP statuses and are ignored.
    pub fn insert(&mut self, code: u16) {
        if let Some((w, bit)) = Self::slot(code) {
            self.0[w] |= bit;
        }
    }

    pub fn contains(&self, code: u16) -> bool {
        Self::slot(code).is_some_and(|(w, bit)| self.0[w] & bit != 0)
    }
}

/// Istio's default `retryOn` (no `retries` in the route).
const DEFAULT_RETRY_ON: [&str; 5] = [
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
];

impl RetryOn {
    pub fn parse<S: AsRef<str>>(items: &[S]) -> RetryOn {
        let mut r = RetryOn::default();
        for i in items {
            match i.as_ref() {
                "5xx" => r.five_xx = true,
                "gateway-error" => r.gateway_error = true,
                "connect-failure" => r.connect_failure = true,
                "reset" | "refused-stream" => r.reset = true,
                "retriable-4xx" => r.retriable_4xx = true,
                // Istio's default retriable status code.
                "retriable-status-codes" => r.status_codes.insert(503),
                "unavailable" | "cancelled" | "deadline-exceeded" | "internal"
                | "resource-exhausted" => {}
                other => {
                    if let Ok(code) = other.parse::<u16>() {
                        r.status_codes.insert(code);
                    }
                }
            }
        }
        r
    }

    fn status(&self, s: u16) -> bool {
        (self.five_xx && s >= 500)
            || (self.gateway_error && matches!(s, 502..=504))
            || (self.retriable_4xx && s == 409)
            || self.status_codes.contains(s)
    }

    fn connect(&self) -> bool {
        self.connect_failure || self.five_xx || self.gateway_error || self.reset
    }

    fn reset(&self) -> bool {
        self.reset || self.five_xx
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub retries: u32,
    pub per_try: Option<Duration>,
    pub timeout: Option<Duration>,
    pub on: RetryOn,
}

impl Policy {
    /// A route's policy; without `retries`, Istio's default (2 retries on
    /// connect-failure, refused-stream, unavailable, cancelled and 503).
    pub fn for_route(retries: Option<&Retry>, timeout: Option<Duration>) -> Policy {
        match retries {
            Some(r) => Policy {
                retries: r.attempts,
                per_try: r.per_try_timeout,
                timeout,
                on: RetryOn::parse(&r.retry_on),
            },
            None => Policy {
                retries: 2,
                per_try: None,
                timeout,
                on: RetryOn::parse(&DEFAULT_RETRY_ON),
            },
        }
    }
}

/// A request body as the retry logic sees it.
pub enum ReqBody {
    /// Buffered (or empty): can be sent again.
    Replayable(Bytes),
    /// Still streaming from the client: one attempt only.
    Stream(Body),
}

impl ReqBody {
    fn take(&mut self) -> Body {
        match self {
            ReqBody::Replayable(b) => Full::new(b.clone()).map_err(|n| match n {}).boxed(),
            ReqBody::Stream(s) => std::mem::replace(s, crate::util::empty()),
        }
    }
    fn replayable(&self) -> bool {
        matches!(self, ReqBody::Replayable(_))
    }
}

/// A successful exchange.
pub struct Sent {
    pub response: Response<Body>,
    pub checkin: Option<Checkin>,
    pub endpoint: EndpointRef,
    /// The endpoint's in-flight count, held until the response is done with.
    pub in_flight: InFlight,
    pub attempts: u32,
}

/// Why there is no upstream response: the status and Envoy response flag to
/// answer with.
#[derive(Debug)]
pub struct Failed {
    pub status: u16,
    pub flags: &'static str,
    pub message: &'static str,
    pub endpoint: Option<EndpointRef>,
}

/// Sends `parts` + `body` to `cluster` (bound to its run-time state: `bound`)
/// under `policy`. Each attempt carries
/// `peer_metadata` (this workload's) only if its endpoint is a mesh endpoint;
/// any copy the app set is dropped otherwise.
#[allow(clippy::too_many_arguments)]
pub async fn to_cluster(
    pool: &Pool,
    cluster: &Arc<Cluster>,
    bound: &Bound,
    parts: &http::request::Parts,
    mut body: ReqBody,
    proto: Protocol,
    authority: &str,
    policy: &Policy,
    keys: &RequestKeys<'_>,
    peer_metadata: &http::HeaderValue,
) -> Result<Sent, Failed> {
    let deadline = policy.timeout.map(|t| Instant::now() + t);
    // The endpoints of earlier attempts; the last one is added only when
    // another attempt starts (most requests never retry: no allocation).
    let mut tried: Vec<std::net::SocketAddr> = Vec::new();
    let mut last: Option<std::net::SocketAddr> = None;
    let mut attempt = 0u32;
    let timed_out = || Failed {
        status: 504,
        flags: "UT",
        message: "upstream request timeout\n",
        endpoint: None,
    };
    loop {
        attempt += 1;
        tried.extend(last.take());
        // Copies only when there is something to leave out: ejected
        // endpoints, or (on a retry) the ones already tried.
        let candidates: Cow<'_, [Member]> = if cluster.outlier.is_some() {
            Cow::Owned(outlier::available(&bound.members))
        } else {
            Cow::Borrowed(&bound.members[..])
        };
        let fresh: Vec<Member> = if tried.is_empty() {
            Vec::new()
        } else {
            candidates
                .iter()
                .filter(|m| !tried.contains(&m.ep.addr))
                .cloned()
                .collect()
        };
        let pool_for_pick: &[Member] = if fresh.is_empty() {
            &candidates
        } else {
            &fresh
        };
        let Some(member) = lb::pick(pool_for_pick, &cluster.lb, &bound.state.rr, keys).cloned()
        else {
            return Err(Failed {
                status: 503,
                flags: "UH",
                message: "no healthy upstream\n",
                endpoint: None,
            });
        };
        let ep = member.ep.clone();
        last = Some(ep.addr);
        let can_retry = attempt <= policy.retries && body.replayable();
        let Some(mut req) =
            crate::util::upstream_request(parts.clone(), body.take(), proto, authority)
        else {
            return Err(Failed {
                status: 400,
                flags: "-",
                message: "bad request target\n",
                endpoint: None,
            });
        };
        if crate::peer::for_endpoint(&ep.tls) {
            req.headers_mut()
                .insert(crate::peer::HEADER, peer_metadata.clone());
        } else {
            req.headers_mut().remove(crate::peer::HEADER);
        }
        let in_flight = member.state.begin();
        let send = attempt_once(pool, cluster, &ep, req, proto);
        let per_try = policy.per_try;
        let limit = match (per_try.map(|d| Instant::now() + d), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let outcome = match limit {
            Some(at) => tokio::time::timeout_at(at, send).await.map_err(|_| ()),
            None => Ok(send.await),
        };
        let overall_expired = deadline.is_some_and(|d| Instant::now() >= d);
        match outcome {
            Ok(Ok((response, checkin))) => {
                let status = response.status().as_u16();
                if let Some(cfg) = &cluster.outlier {
                    outlier::record(cfg, &bound.members, &member, status);
                }
                if can_retry && policy.on.status(status) && !overall_expired {
                    drop(in_flight);
                    backoff(attempt).await;
                    continue;
                }
                return Ok(Sent {
                    response,
                    checkin,
                    endpoint: ep,
                    in_flight,
                    attempts: attempt,
                });
            }
            Ok(Err(e)) => {
                drop(in_flight);
                if let Some(flags) = e.downstream_body_flags() {
                    return Err(Failed {
                        status: 400,
                        flags,
                        message: crate::pool::BAD_BODY,
                        endpoint: Some(ep),
                    });
                }
                if let Some(cfg) = &cluster.outlier {
                    outlier::record(cfg, &bound.members, &member, 0);
                }
                let connect = e.is_connect();
                tracing::debug!(endpoint = %ep.addr, error = %e, attempt, "upstream attempt failed");
                let retry = if connect {
                    policy.on.connect()
                } else {
                    policy.on.reset()
                };
                if can_retry && retry && !overall_expired {
                    backoff(attempt).await;
                    continue;
                }
                let flags = match (connect, attempt > 1) {
                    (true, true) => "URX,UF",
                    (true, false) => "UF",
                    (false, true) => "URX,UC",
                    (false, false) => "UC",
                };
                return Err(Failed {
                    status: 503,
                    flags,
                    message: if connect {
                        crate::pool::CONNECT_FAILURE
                    } else {
                        crate::pool::RESET
                    },
                    endpoint: Some(ep),
                });
            }
            Err(()) => {
                drop(in_flight);
                if overall_expired {
                    return Err(timed_out());
                }
                // Per-try timeout: a gateway error for retry purposes.
                if let Some(cfg) = &cluster.outlier {
                    outlier::record(cfg, &bound.members, &member, 504);
                }
                if can_retry && policy.on.status(504) {
                    backoff(attempt).await;
                    continue;
                }
                return Err(timed_out());
            }
        }
    }
}

async fn attempt_once(
    pool: &Pool,
    cluster: &Cluster,
    ep: &Endpoint,
    req: Request<Body>,
    proto: Protocol,
) -> Result<(Response<Body>, Option<Checkin>), crate::pool::SendError> {
    use crate::mtls::stream::{Alpn, TlsDial};
    let alpn = if proto == Protocol::Http2 {
        Alpn::Http2
    } else {
        Alpn::Http1
    };
    let tls = TlsDial::for_endpoint(pool.tls(), cluster, ep, alpn).map_err(|source| {
        crate::pool::SendError::Connect {
            addr: ep.addr,
            source,
        }
    })?;
    if proto == Protocol::Http2 {
        pool.send_h2_via(ep.addr, tls.as_ref(), req)
            .await
            .map(|r| (r, None))
    } else {
        pool.send_h1_via(ep.addr, tls.as_ref(), req).await
    }
}

/// Envoy's default: 25 ms base interval, exponential, jittered.
async fn backoff(attempt: u32) {
    let base = 25u64 << attempt.saturating_sub(1).min(4);
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=base))).await;
}

#[cfg(test)]
mod tests;
