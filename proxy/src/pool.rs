//! Upstream connection pools, one per proxy direction, keyed by the upstream
//! address. We drive hyper's connection API ourselves (rather than a generic
//! client) so the request keeps its original authority while going to the
//! endpoint the load balancer chose, and so limits can be applied per endpoint.
//!
//! HTTP/1.1: idle connections are reused when the previous response has been
//! read to the end (the response body hands its connection back). A request
//! whose body is whole goes over the sidecar's own client ([`crate::h1client`]),
//! anything else over hyper's; each keeps its own idle connections. HTTP/2: one
//! multiplexed connection per endpoint, replaced when it closes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::body::Body;
use crate::h1client;

mod idle;
pub use crate::mtls::stream::{MaybeTls, TlsDial};
use idle::Fast;

/// Where a pool's connections go.
#[derive(Clone, Copy)]
pub enum Dial {
    /// Straight to the address (outbound; the proxy's UID is exempt from capture).
    Direct,
    /// To the local app from 127.0.0.6 (inbound); the address's port is used.
    LocalApp { instance_ip: Option<IpAddr> },
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {addr}: {source}")]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: UpstreamError,
    },
}

/// What went wrong on an upstream connection, by the client that used it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    Own(#[from] crate::h1client::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect { .. })
    }

    /// When the exchange failed because reading the downstream request body
    /// did (an invalid chunk once the head had gone upstream, or the client
    /// gone mid-body): Envoy's response flag for it. The upstream request was
    /// aborted; the answer is 400, and the endpoint is not to blame.
    pub fn downstream_body_flags(&self) -> Option<&'static str> {
        let SendError::Upstream {
            source: UpstreamError::Hyper(source),
            ..
        } = self
        else {
            return None;
        };
        if !source.is_user() {
            return None;
        }
        let body = std::error::Error::source(source)?.downcast_ref::<hyper::Error>()?;
        Some(if body.is_incomplete_message() {
            "DC"
        } else {
            "DPE"
        })
    }
}

/// The answer when the downstream request body could not be read.
pub const BAD_BODY: &str = "invalid request body\n";

/// Envoy's local reply when no connection to the upstream could be made (`UF`).
pub const CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure\n";

/// Envoy's local reply when the upstream connection ended before a response (`UC`).
pub const RESET: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination\n";

/// Returns an HTTP/1 connection to its pool; dropped unused if the exchange
/// did not finish cleanly.
pub struct Checkin {
    pool: Arc<PoolInner>,
    addr: Key,
    sender: Option<http1::SendRequest<Body>>,
}

impl Checkin {
    /// The response completed: the connection may serve the next request.
    pub fn done(mut self) {
        if let Some(s) = self.sender.take() {
            if !s.is_closed() {
                let mut idle = self.pool.h1.lock().expect("pool lock");
                let list = idle.entry(self.addr).or_default();
                if list.len() < idle::MAX_PER_KEY {
                    list.push(s);
                }
            }
        }
    }
}

/// Connections are pooled per address and per security: an mTLS connection
/// is never reused for a plaintext request to the same endpoint, or vice versa,
/// nor across different TLS settings ([`TlsDial::pool_key`]).
type Key = (SocketAddr, u64);

struct PoolInner {
    dial: Dial,
    tls: Arc<crate::mtls::certs::TlsState>,
    h1: Mutex<HashMap<Key, Vec<http1::SendRequest<Body>>, Fast>>,
    /// Idle connections of the own HTTP/1.1 client.
    own: Arc<idle::Idle<Key>>,
    h2: Mutex<HashMap<Key, http2::SendRequest<Body>, Fast>>,
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    pub fn new(dial: Dial, tls: Arc<crate::mtls::certs::TlsState>) -> Pool {
        Pool {
            inner: Arc::new(PoolInner {
                dial,
                tls,
                h1: Mutex::new(HashMap::default()),
                own: idle::Idle::new(),
                h2: Mutex::new(HashMap::default()),
            }),
        }
    }

    /// The workload certificate mTLS connections from this pool use.
    pub fn tls(&self) -> &crate::mtls::certs::TlsState {
        &self.inner.tls
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        tls: Option<&TlsDial>,
    ) -> Result<MaybeTls, SendError> {
        let r = match self.inner.dial {
            Dial::Direct => crate::endpoint::connect(addr).await,
            Dial::LocalApp { instance_ip } => {
                crate::endpoint::connect_local_app(addr.port(), instance_ip).await
            }
        };
        let tcp = r.map_err(|source| SendError::Connect { addr, source })?;
        match tls {
            None => Ok(MaybeTls::Plain(tcp)),
            Some(t) => t
                .connect(tcp)
                .await
                .map_err(|source| SendError::Connect { addr, source }),
        }
    }

    /// Sends an HTTP/1.1 request to `addr` in plaintext.
    pub async fn send_h1(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
    ) -> Result<(Response<Body>, Option<Checkin>), SendError> {
        self.send_h1_via(addr, None, req).await
    }

    /// Sends an HTTP/2 request to `addr` in plaintext (h2c).
    pub async fn send_h2(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        self.send_h2_via(addr, None, req).await
    }

    /// Sends an HTTP/1.1 request to `addr`, over mTLS when `tls` says so. On
    /// success also returns hyper's connection's check-in, to be completed
    /// when the response body ends (the own client's body checks its
    /// connection in itself).
    pub async fn send_h1_via(
        &self,
        addr: SocketAddr,
        tls: Option<&TlsDial>,
        req: Request<Body>,
    ) -> Result<(Response<Body>, Option<Checkin>), SendError> {
        let key = (addr, tls.map_or(0, |t| t.pool_key));
        let req = match h1client::outgoing(req) {
            Ok(out) => return self.send_own(addr, tls, key, out).await.map(|r| (r, None)),
            Err(req) => *req,
        };
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        // A connection checked in when its last response ended may not be
        // marked ready yet (its task has not run since): wait for it briefly
        // rather than discarding it, or every request would open a connection.
        let mut idle = None;
        loop {
            let candidate = {
                let mut m = self.inner.h1.lock().expect("pool lock");
                m.get_mut(&key).and_then(Vec::pop)
            };
            let Some(mut s) = candidate else { break };
            if s.is_closed() {
                continue;
            }
            if s.is_ready() {
                idle = Some(s);
                break;
            }
            if let Ok(Ok(())) =
                tokio::time::timeout(std::time::Duration::from_millis(50), s.ready()).await
            {
                idle = Some(s);
                break;
            }
        }
        let mut sender = match idle {
            Some(s) => s,
            // Boxed: the dial (TCP, TLS, handshake) is a large future that
            // most requests, on a pooled connection, never run; inline, every
            // request's future would carry (and move) its bytes.
            None => Box::pin(self.dial_h1(addr, tls)).await?,
        };
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| upstream(addr, e))?
            .map(crate::body::from_hyper);
        let reusable = !upgrade && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS;
        let checkin = reusable.then(|| Checkin {
            pool: self.inner.clone(),
            addr: key,
            sender: Some(sender),
        });
        Ok((resp, checkin))
    }

    /// A new HTTP/1.1 connection to `addr`, its connection task spawned.
    async fn dial_h1(
        &self,
        addr: SocketAddr,
        tls: Option<&TlsDial>,
    ) -> Result<http1::SendRequest<Body>, SendError> {
        let stream = self.connect(addr, tls).await?;
        let (s, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| upstream(addr, e))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(s)
    }

    /// A new HTTP/2 connection to `addr`, its connection task spawned and
    /// the sender shared in the pool.
    async fn dial_h2(
        &self,
        addr: SocketAddr,
        tls: Option<&TlsDial>,
        key: Key,
    ) -> Result<http2::SendRequest<Body>, SendError> {
        let stream = self.connect(addr, tls).await?;
        let (s, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| upstream(addr, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.inner
            .h2
            .lock()
            .expect("pool lock")
            .insert(key, s.clone());
        Ok(s)
    }

    /// Sends an HTTP/2 request over the endpoint's shared connection.
    pub async fn send_h2_via(
        &self,
        addr: SocketAddr,
        tls: Option<&TlsDial>,
        req: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        let key = (addr, tls.map_or(0, |t| t.pool_key));
        let existing = {
            let m = self.inner.h2.lock().expect("pool lock");
            m.get(&key).filter(|s| !s.is_closed()).cloned()
        };
        let mut sender = match existing {
            Some(s) => s,
            // Boxed for the reason given in `send_h1_via`.
            None => Box::pin(self.dial_h2(addr, tls, key)).await?,
        };
        sender.ready().await.map_err(|e| upstream(addr, e))?;
        sender
            .send_request(req)
            .await
            .map(|r| r.map(crate::body::from_hyper))
            .map_err(|e| upstream(addr, e))
    }

    /// Sends a request the own client takes, on an idle connection of its
    /// own if one is usable, or a new one.
    async fn send_own(
        &self,
        addr: SocketAddr,
        tls: Option<&TlsDial>,
        key: Key,
        out: h1client::Outgoing,
    ) -> Result<Response<Body>, SendError> {
        let conn = match self.inner.own.checkout(&key) {
            Some(c) => c,
            // Boxed for the reason given in `send_h1_via`.
            None => h1client::Conn::new(Box::pin(self.connect(addr, tls)).await?),
        };
        let back = Back {
            pool: self.inner.clone(),
            key,
        };
        conn.send(out, back)
            .await
            .map(|r| r.map(http_body_util::BodyExt::boxed))
            .map_err(|e| upstream(addr, e))
    }
}

fn upstream(addr: SocketAddr, e: impl Into<UpstreamError>) -> SendError {
    SendError::Upstream {
        addr,
        source: e.into(),
    }
}

/// Where an own-client connection goes when its response has been read.
struct Back {
    pool: Arc<PoolInner>,
    key: Key,
}

impl h1client::Reuse for Back {
    fn reuse(self, conn: h1client::Conn) {
        self.pool.own.checkin(self.key, conn);
    }
}

#[cfg(test)]
impl Pool {
    /// The own client's idle plaintext connections to `addr`.
    pub(crate) fn own_idle(&self, addr: SocketAddr) -> usize {
        self.inner.own.count(&(addr, 0))
    }

    /// Whether the idle connection to `addr` the next request would take is usable.
    pub(crate) fn own_idle_usable(&self, addr: SocketAddr) -> Option<bool> {
        self.inner.own.peek_usable(&(addr, 0))
    }

    /// Runs the idle sweep now; how many connections it dropped.
    pub(crate) fn sweep_own_idle(&self) -> usize {
        self.inner.own.sweep()
    }
}
