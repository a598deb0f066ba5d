//! One downstream HTTP connection (HTTP/1 or HTTP/2, plaintext or after mTLS):
//! what a connection knows ([`ConnCtx`]), its servers (the own HTTP/1.1 one,
//! then hyper's, from the one builder every downstream listener shares), the
//! checks every request passes before its direction's handler (the HTTP/1
//! guard's refusals, framing hazards), and the watchdog that enforces
//! [`crate::downstream`]'s decisions on the connection (first-byte and idle
//! timeouts, the premature-reset budget, the drain). The handler (inbound,
//! outbound, a gateway's) is passed in by the layer above.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

use crate::body::Body;
use crate::direction::Direction;
use crate::downstream::{decide, Activity, ConnState, Next, Reason, ResetBudget, Timeouts};
use crate::h1server::{Ended, Rewind};
use crate::shared::Shared;

/// The connection a request arrived on.
pub struct ConnCtx {
    /// The `X-Forwarded-Client-Cert` value for every request on this
    /// connection: it names the verified peer, so it is built once at the
    /// handshake. Formatting and validating it per request was 10 k of the
    /// mTLS server sidecar's 66 k instructions per request (callgrind).
    pub xfcc: Option<http::HeaderValue>,
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    pub orig_dst: SocketAddr,
    pub direction: Direction,
    pub peer_identity: Option<mesh_api::Identity>,
}

/// The HTTP server settings for every downstream connection (inbound, outbound
/// and any future gateway listener: keep it one builder). Envoy's edge
/// recommendations are the reference.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // A started request's headers must arrive within this.
        .header_read_timeout(crate::h1server::HEADER_READ_TIMEOUT)
        // 60 KiB / 100 headers, Envoy's max_request_headers_kb/count defaults.
        // 100 is hyper's own default; setting it explicitly (`max_headers`)
        // makes hyper fill a 100-slot array per request head instead of using
        // its uninitialised inline one (1.5 % of the sidecar's user time in
        // the 2026-12-05 profile). More than 100 is 431 either way
        // (tests/hardening.rs).
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        // Envoy's edge value: 100 streams at once bounds the work one connection
        // can have in flight (hyper's default is 200).
        .max_concurrent_streams(100)
        // Same 60 KiB budget as HTTP/1; also what bounds a CONTINUATION flood
        // (h2 stops buffering a header block past this and answers 431/GOAWAY).
        .max_header_list_size(60 * 1024)
        // Burst rapid reset: h2 sends GOAWAY past 50 reset-before-accept streams.
        // The paced kind is the premature-reset budget in `serve`.
        .max_pending_accept_reset_streams(50)
        // Receive windows: 64 KiB per stream, 1 MiB per connection (Envoy's edge
        // values) bound what a client can make us buffer of its request bodies.
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        // Send side: at most 128 KiB queued per stream for a client that does
        // not read (zero window); the upstream is back-pressured beyond it.
        .max_send_buf_size(128 * 1024)
        // We send no PINGs: idleness is measured by requests, and a PING we
        // sent would count as the peer's activity.
        .keep_alive_interval(None);
    b
}

/// How long a connection that spent its premature-reset budget gets to write
/// its GOAWAY before it is dropped.
const FLOOD_FLUSH: Duration = Duration::from_millis(20);

/// Tells connections to finish (GOAWAY / `Connection: close`) and waits for them.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// What one connection holds of a [`Drain`].
#[derive(Debug)]
pub struct DrainWatch {
    token: CancellationToken,
    _live: TaskTrackerToken,
}

impl Drain {
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            token: self.token.clone(),
            _live: self.tracker.token(),
        }
    }

    /// Signals every watcher and waits at most `within` for them to finish.
    pub async fn shutdown(self, within: Duration) {
        self.token.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(within, self.tracker.wait()).await;
    }
}

/// Serves one downstream HTTP connection until it ends or is closed, each
/// request by `handler`: the own HTTP/1.1 server ([`crate::h1server`]) first,
/// hyper's from the first request it does not take (HTTP/2 from the start).
/// The HTTP/1 head guard sits right under both: it sees exactly the bytes they
/// parse (HTTP/2 passes through it untouched).
pub async fn serve_http<S, H, F>(stream: S, ctx: Arc<ConnCtx>, drain: DrainWatch, handler: H)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Body>, Arc<ConnCtx>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |req, ctx| Box::pin(handler(req, ctx)));
    let stream: BoxIo = Box::new(stream);
    serve(crate::h1guard::Guarded::new(stream), ctx, drain, handler).await
}

/// A downstream connection's bytes, whatever carries them (TCP, a TLS session,
/// a sniffed stream). Erased, with the handler, so that hyper's HTTP/1 and
/// HTTP/2 server code is compiled into the sidecar once instead of once per
/// (stream type, direction) pair: five copies cost 0.4 MiB of text, and a
/// virtual call per read/write or a box per request costs nothing measurable
/// beside the syscall each one makes.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}
type BoxIo = Box<dyn Io>;

/// A direction's request handler, erased (see [`Io`]).
type Handler = Arc<dyn Fn(Request<Body>, Arc<ConnCtx>) -> Reply + Send + Sync>;
type Reply = std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Every request first: the guard's and framing refusals; afterwards, a
/// draining proxy asks the client to close the connection.
async fn handle(req: Request<Body>, ctx: Arc<ConnCtx>, handler: &Handler) -> Response<Body> {
    // Stands in for a request the connection's guard refused (crate::h1guard).
    if req.method().as_str() == crate::h1guard::REJECT_METHOD {
        return crate::h1guard::local_reply(req.uri().path());
    }
    if let Some(why) = crate::util::framing_hazard(req.headers()) {
        let mut r = crate::util::full(StatusCode::BAD_REQUEST, why);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let shared = ctx.shared.clone();
    let mut resp = handler(req, ctx).await;
    if shared.is_draining() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A connection's HTTP server as its watchdog sees it: it ends (the own
/// HTTP/1.1 server possibly handing the connection to hyper's), or is asked
/// to end gracefully. Erased so the watchdog is compiled once.
trait Served: Future<Output = Result<Ended, BoxError>> + Send {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// [`crate::h1server`] on its way.
struct Own<'a, F> {
    fut: std::pin::Pin<&'a mut F>,
    shutdown: &'a AtomicBool,
}

impl<F: Future<Output = Result<Ended, crate::h1server::Error>>> Future for Own<'_, F> {
    type Output = Result<Ended, BoxError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx).map_err(BoxError::from)
    }
}

impl<F: Future<Output = Result<Ended, crate::h1server::Error>> + Send> Served for Own<'_, F> {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        self.shutdown.store(true, Ordering::Relaxed);
    }
}

/// hyper's server (HTTP/2, and HTTP/1 from the first request the own server
/// does not take); `graceful` is its `graceful_shutdown`.
struct Hyper<'a, C> {
    conn: std::pin::Pin<&'a mut C>,
    graceful: fn(std::pin::Pin<&mut C>),
}

impl<C: Future<Output = Result<(), BoxError>>> Future for Hyper<'_, C> {
    type Output = Result<Ended, BoxError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.conn.as_mut().poll(cx).map_ok(|()| Ended::Closed)
    }
}

impl<C: Future<Output = Result<(), BoxError>> + Send> Served for Hyper<'_, C> {
    fn graceful_shutdown(mut self: std::pin::Pin<&mut Self>) {
        let graceful = self.graceful;
        graceful(self.conn.as_mut());
    }
}

async fn serve(
    stream: crate::h1guard::Guarded<BoxIo>,
    ctx: Arc<ConnCtx>,
    drain: DrainWatch,
    handler: Handler,
) {
    let shared = ctx.shared.clone();
    let w = Watch {
        timeouts: Timeouts {
            first_byte: shared.cfg.first_byte_timeout,
            idle: shared.cfg.http_idle_timeout,
            close_grace: shared.cfg.drain_duration,
        },
        state: ConnState::new(ResetBudget::DEFAULT),
        shared,
        peer: ctx.peer,
        drain,
    };
    let mut io = Activity::new(stream, w.state.clone());
    let mut buf = bytes::BytesMut::new();
    let shutdown = AtomicBool::new(false);
    let mut going_away: Option<tokio::time::Instant> = None;
    let mut peer = crate::h1server::PeerMemo::default();
    let ended = {
        let own = crate::h1server::serve(&mut io, &mut buf, &shutdown, &mut peer, |req| {
            let guard = w.state.open_stream();
            let reply = handle(req, ctx.clone(), &handler);
            async move { reply.await.map(|b| guard.respond(b)) }
        });
        let mut own = std::pin::pin!(own);
        let served = std::pin::pin!(Own {
            fut: own.as_mut(),
            shutdown: &shutdown,
        });
        w.watch(served, &mut going_away).await
    };
    match ended {
        Some(Ok(Ended::HandOff)) => {}
        Some(Err(e)) => {
            tracing::debug!(error = %e, "http connection ended");
            return;
        }
        _ => return,
    }
    let st = w.state.clone();
    // A client the own server told it keeps the peer metadata goes on leaving
    // it out (see `crate::h1peer`): put it back here too.
    let kept = peer
        .missing()
        .map(|v| Arc::new(std::sync::Mutex::new(v.clone())));
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // Dropped unanswered when the client resets the stream: a premature reset.
        let guard = st.open_stream();
        let h2 = req.version() == http::Version::HTTP_2;
        if let Some(kept) = &kept {
            let mut kept = kept.lock().expect("kept peer metadata");
            match req.headers().get(crate::peer::HEADER) {
                Some(v) => *kept = v.clone(),
                None => {
                    req.headers_mut().insert(crate::peer::HEADER, kept.clone());
                }
            }
        }
        let (ctx, handler) = (ctx.clone(), handler.clone());
        async move {
            if h2 {
                // Yield once before any work: hyper then looks for a RST_STREAM,
                // which a rapid-reset client sends in the same packet as its
                // HEADERS, and drops the stream before we dial or forward.
                tokio::task::yield_now().await;
            }
            let resp = handle(req.map(crate::body::from_hyper), ctx, &handler).await;
            Ok::<_, Infallible>(resp.map(|b| guard.respond(b)))
        }
    });
    let io = TokioIo::new(Rewind::new(io, buf.freeze()));
    let builder = http_builder();
    let conn = builder.serve_connection_with_upgrades(io, svc);
    let mut conn = std::pin::pin!(conn);
    // One turn first, so hyper has read what the own server read and started
    // its protocol (an HTTP/2 server writes its SETTINGS): a flood or a drain
    // noticed meanwhile then ends the connection with a GOAWAY, not in
    // silence.
    let first = std::future::poll_fn(|cx| Poll::Ready(conn.as_mut().poll(cx))).await;
    let r = match first {
        Poll::Ready(r) => Some(r.map(|()| Ended::Closed)),
        Poll::Pending => {
            if going_away.is_some() {
                // Told to go away while the own server had the connection.
                conn.as_mut().graceful_shutdown();
            }
            let served = std::pin::pin!(Hyper {
                conn: conn.as_mut(),
                graceful: |c| c.graceful_shutdown(),
            });
            w.watch(served, &mut going_away).await
        }
    };
    // Ended, or upgraded: then the stream (still read through `Activity`)
    // belongs to a tunnel, whose bytes are no flood.
    w.state.set_opaque();
    if let Some(Err(e)) = r {
        tracing::debug!(error = %e, "http connection ended");
        if crate::downstream::is_protocol_violation(e.as_ref()) {
            w.shared.metrics.conn.closed(Reason::ProtocolError);
            w.shared.penalty.closed(w.peer.ip(), Reason::ProtocolError);
        }
    }
}

/// The watchdog of one connection: enforces [`crate::downstream`]'s
/// decisions while its server runs.
struct Watch {
    timeouts: Timeouts,
    state: Arc<ConnState>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    drain: DrainWatch,
}

impl Watch {
    /// Runs `conn` under the watchdog: its result when it ends by itself,
    /// `None` when the watchdog dropped it.
    async fn watch(
        &self,
        mut conn: std::pin::Pin<&mut (dyn Served + '_)>,
        going_away: &mut Option<tokio::time::Instant>,
    ) -> Option<Result<Ended, BoxError>> {
        let (shared, peer, state) = (&self.shared, self.peer, &self.state);
        loop {
            let now = tokio::time::Instant::now();
            let check_at = match decide(now, &state.facts(*going_away), &self.timeouts) {
                Next::CheckAt(t) => t,
                Next::Close(reason) => {
                    tracing::debug!(?reason, "downstream connection closed");
                    shared.metrics.conn.closed(reason);
                    return None;
                }
                Next::GoAway(reason) => {
                    shared.metrics.conn.closed(reason);
                    shared.penalty.closed(peer.ip(), reason);
                    conn.as_mut().graceful_shutdown();
                    if matches!(reason, Reason::ResetFlood | Reason::ControlFlood) {
                        // An attack or a broken client: operators want the peer. No
                        // grace: every further frame costs us, so the GOAWAY gets a
                        // moment to be written, then the connection is dropped.
                        tracing::info!(%peer, ?reason, "downstream flood: GOAWAY and close");
                        let _ = tokio::time::timeout(FLOOD_FLUSH, conn.as_mut()).await;
                        return None;
                    }
                    tracing::debug!(?reason, "downstream connection told to go away");
                    *going_away = Some(now);
                    continue;
                }
            };
            tokio::select! {
                // The watchdog first, with the task's fresh coop budget: a client
                // that keeps the connection always readable (a SETTINGS or PING
                // flood) must not starve it.
                biased;
                _ = tokio::time::sleep_until(check_at) => {}
                // Acted on at once (not at the next deadline): a flood budget is spent.
                _ = state.flood.notified(), if going_away.is_none() => {}
                _ = self.drain.token.cancelled(), if going_away.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    *going_away = Some(tokio::time::Instant::now());
                }
                r = conn.as_mut() => return Some(r),
            }
        }
    }
}
