//! Opaque TCP: a connection is copied byte for byte to its upstream, with the
//! `istio_tcp_*` metrics and a TCP access-log line. Also the first-bytes race
//! for undeclared protocols: if the client stays silent briefly, the upstream is
//! connected at once and whoever speaks first decides, so a server-first
//! protocol's greeting is not held back by detection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::detect::{self, Detected};
use crate::metrics::{Reporter, TcpLabels, Workload};
use crate::shared::Shared;

/// Who the TCP series is about.
pub struct TcpMeta {
    pub reporter: Reporter,
    pub source: Arc<Workload>,
    pub destination: Arc<Workload>,
    pub service: Arc<str>,
    pub service_name: Arc<str>,
    pub service_namespace: Arc<str>,
    pub cluster: Arc<str>,
    /// The downstream connection was mTLS (inbound).
    pub mtls: bool,
}

/// Copies between `down` and an already connected `up` until both sides close.
pub async fn splice(
    shared: &Arc<Shared>,
    down: TcpStream,
    up: TcpStream,
    meta: TcpMeta,
    flags: &'static str,
) {
    let addrs = (down.local_addr().ok(), down.peer_addr().ok());
    let upstream = up.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    splice_io(shared, down, addrs, up, upstream, meta, flags).await
}

/// [`splice`] for any streams (TLS on either side); `addrs` are the downstream
/// (local, remote) addresses for the access log.
pub async fn splice_io<D, U>(
    shared: &Arc<Shared>,
    down: D,
    addrs: (Option<SocketAddr>, Option<SocketAddr>),
    mut up: U,
    upstream: String,
    meta: TcpMeta,
    flags: &'static str,
) where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let start = Instant::now();
    let labels = labels(&meta, flags);
    shared.metrics.tcp_opened(&labels);
    let security = labels.connection_security_policy;
    let (local, remote) = addrs;
    // Counted on the downstream side (every byte passes it), which is also
    // where idleness is seen: no byte either way for --tcp-idle-timeout closes.
    let state = crate::downstream::ConnState::opaque();
    let mut down = crate::downstream::Activity::new(down, state.clone());
    {
        let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
        let mut copy = std::pin::pin!(copy);
        let idle = shared.cfg.tcp_idle_timeout;
        loop {
            let now = tokio::time::Instant::now();
            let at = match crate::downstream::decide_tcp(now, state.last_io(), idle) {
                crate::downstream::Next::CheckAt(at) => at,
                crate::downstream::Next::Close(reason)
                | crate::downstream::Next::GoAway(reason) => {
                    shared.metrics.conn.closed(reason);
                    break;
                }
            };
            tokio::select! {
                _ = &mut copy => break,
                _ = tokio::time::sleep_until(at) => {}
            }
        }
    }
    use std::sync::atomic::Ordering::Relaxed;
    let (sent, received) = (
        state.read_bytes.load(Relaxed),
        state.written_bytes.load(Relaxed),
    );
    shared.metrics.tcp_closed(labels, sent, received);
    if let (Some(l), Some(r)) = (local, remote) {
        crate::access_log::tcp(
            &shared.access_log,
            crate::access_log::TcpEntry {
                cluster: &meta.cluster,
                upstream: &upstream,
                flags,
                bytes_received: sent,
                bytes_sent: received,
                duration_ms: start.elapsed().as_millis() as u64,
                downstream_local: l,
                downstream_remote: r,
                peer_principal: if meta.mtls {
                    &meta.source.principal
                } else {
                    "unknown"
                },
                security,
            },
        );
    }
}

/// Records a connection that could not be carried (no upstream) and closes it.
pub async fn refuse<D: tokio::io::AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    mut down: D,
    meta: TcpMeta,
    flags: &'static str,
) {
    let labels = labels(&meta, flags);
    shared.metrics.tcp_opened(&labels);
    shared.metrics.tcp_closed(labels, 0, 0);
    let _ = down.shutdown().await;
}

fn labels(meta: &TcpMeta, flags: &'static str) -> TcpLabels {
    TcpLabels {
        reporter: meta.reporter,
        source: meta.source.clone(),
        destination: meta.destination.clone(),
        destination_service: meta.service.clone(),
        destination_service_name: meta.service_name.clone(),
        destination_service_namespace: meta.service_namespace.clone(),
        response_flags: flags,
        connection_security_policy: match (meta.reporter, meta.mtls) {
            (Reporter::Destination, true) => "mutual_tls",
            (Reporter::Destination, false) => "none",
            _ => "unknown",
        },
    }
}

/// Outcome of detection on an undeclared port.
pub enum Sniffed {
    Http,
    /// Opaque TCP; carries the upstream if the race already connected it.
    Tcp(Option<TcpStream>),
}

/// How long a client may stay silent before the upstream is dialled.
const QUIET: Duration = Duration::from_millis(10);

/// Detects the protocol of `down`. `dial` connects the upstream, used only if
/// the client is quiet: then the first side to speak (or the end of `window`)
/// decides.
pub async fn sniff<F, Fut>(down: &TcpStream, window: Duration, dial: F) -> Sniffed
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<TcpStream>>,
{
    let quick = detect::detect(down, QUIET.min(window)).await;
    let mut buf = [0u8; 1];
    let client_spoke = matches!(down.peek(&mut buf).now_or_never_peek(), Some(n) if n > 0);
    if client_spoke || quick != Detected::Tcp {
        return classify(quick);
    }
    let Ok(up) = dial().await else {
        // Let the normal path report the connection failure.
        return Sniffed::Tcp(None);
    };
    let rest = window.saturating_sub(QUIET);
    tokio::select! {
        d = detect::detect(down, rest) => match d {
            Detected::Http1 | Detected::Http2 => Sniffed::Http,
            _ => Sniffed::Tcp(Some(up)),
        },
        _ = up.readable() => Sniffed::Tcp(Some(up)),
    }
}

fn classify(d: Detected) -> Sniffed {
    match d {
        Detected::Http1 | Detected::Http2 => Sniffed::Http,
        _ => Sniffed::Tcp(None),
    }
}

trait NowOrNever {
    fn now_or_never_peek(self) -> Option<usize>;
}

impl<F: std::future::Future<Output = std::io::Result<usize>>> NowOrNever for F {
    /// Polls once: whether bytes are already waiting, without blocking.
    fn now_or_never_peek(self) -> Option<usize> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(self);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(n)) => Some(n),
            _ => None,
        }
    }
}
