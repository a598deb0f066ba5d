//! Downstream connection hardening, the pure part: the HTTP/2 premature-reset
//! budget (Envoy's `premature_reset_total_stream_count` idea), the first-byte /
//! idle / GOAWAY-grace deadlines of one connection, the per-listener connection
//! cap, and the counters they feed. The I/O shell that applies them is
//! the `conn` module (HTTP) and the `tcp` module (opaque TCP), above this one.
//!
//! Why: a paced HTTP/2 rapid-reset client (a few dozen HEADERS+RST_STREAM per
//! millisecond) stays under h2's burst limit and could hold one connection for
//! hundreds of thousands of streams; silent connections were held forever.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection has spent its premature-reset budget: at least
/// `min_streams` streams opened and more than `max_premature_pct` percent of them
/// reset by the client before the response started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetBudget {
    pub min_streams: u64,
    pub max_premature_pct: u64,
}

impl ResetBudget {
    /// 100 streams keeps a browser or gRPC client that cancels now and then far
    /// from the limit while a flood is cut within ~100 streams (Envoy waits for
    /// 500; we act earlier because a reset stream costs us an upstream dial).
    pub const DEFAULT: ResetBudget = ResetBudget {
        min_streams: 100,
        max_premature_pct: 50,
    };

    pub fn exceeded(&self, opened: u64, premature: u64) -> bool {
        opened >= self.min_streams
            && premature.saturating_mul(100) > opened.saturating_mul(self.max_premature_pct)
    }
}

/// The deadlines of one downstream HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection that has sent no byte by then is closed (no response: there
    /// is no request to answer).
    pub first_byte: Duration,
    /// No request started, no response byte moved for this long: GOAWAY /
    /// `Connection: close`. Control frames (PING, SETTINGS) do not count, like
    /// Envoy's `idle_timeout` which counts requests, not bytes.
    pub idle: Duration,
    /// How long a connection told to go away may take to finish its streams.
    pub close_grace: Duration,
}

/// Why a connection is being closed (the counter it bumps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    FirstByte,
    Idle,
    ResetFlood,
    /// Bytes kept coming with no request in flight: a PING or SETTINGS flood.
    ControlFlood,
    /// Told to go away, but streams did not finish within the grace.
    GraceOver,
    /// Opaque TCP with no byte either way for the TCP idle timeout.
    TcpIdle,
    /// h2 itself ended the connection with a GOAWAY for the peer's protocol
    /// violation (a CONTINUATION flood past the header limit, a burst of
    /// resets, a malformed frame).
    ProtocolError,
}

/// What the watchdog of a connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing yet: look again at this instant (or when something happens).
    CheckAt(Instant),
    /// Start a graceful close (GOAWAY / `Connection: close`).
    GoAway(Reason),
    /// Drop the connection now.
    Close(Reason),
}

/// What the watchdog knows about a connection at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub started: Instant,
    pub first_byte: bool,
    pub last_progress: Instant,
    pub reset_exceeded: bool,
    /// More than [`CONTROL_BYTES`] read, or more PING/SETTINGS frames than
    /// [`crate::h2scan::ControlBucket`] allows, while no request was in flight.
    pub control_flood: bool,
    pub going_away_since: Option<Instant>,
}

/// The watchdog's decision; pure so timers are tested with paused time.
pub fn decide(now: Instant, f: &Facts, t: &Timeouts) -> Next {
    if let Some(since) = f.going_away_since {
        let end = since + t.close_grace;
        return if now >= end {
            Next::Close(Reason::GraceOver)
        } else {
            Next::CheckAt(end)
        };
    }
    let first_byte_end = f.started + t.first_byte;
    if !f.first_byte && now >= first_byte_end {
        return Next::Close(Reason::FirstByte);
    }
    if f.reset_exceeded {
        return Next::GoAway(Reason::ResetFlood);
    }
    if f.control_flood {
        return Next::GoAway(Reason::ControlFlood);
    }
    let idle_end = f.last_progress + t.idle;
    if now >= idle_end {
        return Next::GoAway(Reason::Idle);
    }
    // The watchdog only wakes at deadlines: while no byte has come, the next
    // one is the earlier of both (the first byte does not wake it).
    if f.first_byte {
        Next::CheckAt(idle_end)
    } else {
        Next::CheckAt(first_byte_end.min(idle_end))
    }
}

/// What a connection may send while no request is in flight before it is told
/// to go away. A request's own headers arrive before it is in flight (at most
/// 64 KiB, the header limits), so 256 KiB is never reached by a real client;
/// a PING flood reaches it after ~15,000 PINGs.
pub const CONTROL_BYTES: u64 = 256 * 1024;

/// Whether a connection's error is h2 having sent GOAWAY for the peer's
/// protocol violation (searched down the error's sources: hyper wraps it).
pub fn is_protocol_violation(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<h2::Error>() {
            return h.is_go_away() && h.is_library();
        }
        cur = err.source();
    }
    false
}

/// The watchdog of an opaque TCP connection: closed once no byte moved either
/// way for `idle`.
pub fn decide_tcp(now: Instant, last_io: Instant, idle: Duration) -> Next {
    let end = last_io + idle;
    if now >= end {
        Next::Close(Reason::TcpIdle)
    } else {
        Next::CheckAt(end)
    }
}

/// Shared between a connection's I/O wrapper, its streams and its watchdog.
#[derive(Debug)]
pub struct ConnState {
    origin: Instant,
    first_byte: AtomicBool,
    /// Milliseconds after `origin`.
    last_io_ms: AtomicU64,
    last_progress_ms: AtomicU64,
    opened: AtomicU64,
    premature: AtomicU64,
    /// Requests between service call and the end of their response body.
    in_flight: AtomicU64,
    /// Bytes read while `in_flight` was 0, since the last request started.
    quiet_bytes: AtomicU64,
    /// Bytes read from / written to the downstream.
    pub read_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
    budget: ResetBudget,
    /// A flood budget is spent: nothing more is read from the connection (its
    /// GOAWAY can still be written). Why: until the watchdog drops it, every
    /// frame read is more work the attacker gets for free.
    spent: AtomicBool,
    /// The control-frame bucket ran dry (see [`Activity`]).
    control_frames_spent: AtomicBool,
    /// Signalled when the reset budget is spent (a stored permit: never missed).
    pub flood: tokio::sync::Notify,
}

impl ConnState {
    pub fn new(budget: ResetBudget) -> Arc<ConnState> {
        Arc::new(ConnState {
            origin: Instant::now(),
            first_byte: AtomicBool::new(false),
            last_io_ms: AtomicU64::new(0),
            last_progress_ms: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            premature: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            quiet_bytes: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            budget,
            spent: AtomicBool::new(false),
            control_frames_spent: AtomicBool::new(false),
            flood: tokio::sync::Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    fn io(&self, read: bool, n: usize) {
        if read {
            self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
            if self.in_flight.load(Ordering::Relaxed) == 0 {
                let q = self.quiet_bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                if q > CONTROL_BYTES && q - n as u64 <= CONTROL_BYTES {
                    self.spend();
                }
            }
            if !self.first_byte.load(Ordering::Relaxed) {
                self.first_byte.store(true, Ordering::Relaxed);
            }
        } else {
            self.written_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn spend(&self) {
        self.spent.store(true, Ordering::Relaxed);
        self.flood.notify_one();
    }

    /// Whether no request is in flight (control frames then count).
    fn quiet(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// `n` PING/SETTINGS frames were read at `now`: a control flood once the
    /// bucket is dry while no request is in flight.
    fn control_frames(&self, bucket: &mut crate::h2scan::ControlBucket, n: u32, now: Instant) {
        if n > 0 && self.quiet() && !bucket.take(n, now) && !self.is_spent() {
            self.control_frames_spent.store(true, Ordering::Relaxed);
            self.spend();
        }
    }

    /// Whether a flood budget is spent (reads stop).
    pub fn is_spent(&self) -> bool {
        self.spent.load(Ordering::Relaxed)
    }

    pub fn progress(&self) {
        self.last_progress_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// When a byte last moved either way (opaque TCP idleness).
    pub fn last_io(&self) -> Instant {
        self.at(self.last_io_ms.load(Ordering::Relaxed))
    }

    pub fn facts(&self, going_away_since: Option<Instant>) -> Facts {
        Facts {
            started: self.origin,
            first_byte: self.first_byte.load(Ordering::Relaxed),
            last_progress: self.at(self.last_progress_ms.load(Ordering::Relaxed)),
            reset_exceeded: self.budget.exceeded(
                self.opened.load(Ordering::Relaxed),
                self.premature.load(Ordering::Relaxed),
            ),
            control_flood: self.quiet_bytes.load(Ordering::Relaxed) > CONTROL_BYTES
                || self.control_frames_spent.load(Ordering::Relaxed),
            going_away_since,
        }
    }

    /// A request arrived: held by the service future until the response starts.
    pub fn open_stream(self: &Arc<Self>) -> StreamGuard {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let request = InFlight::new(self);
        self.quiet_bytes.store(0, Ordering::Relaxed);
        self.progress();
        StreamGuard {
            state: self.clone(),
            request: Some(request),
        }
    }
}

/// One request counted in flight on its connection for as long as it lives:
/// held by its stream until the response starts, then by the response body.
#[derive(Debug)]
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: &Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts its stream as premature if dropped before [`StreamGuard::respond`]
/// (hyper drops the service future when the client resets the stream).
pub struct StreamGuard {
    state: Arc<ConnState>,
    /// `None` once the response started (its body holds the count then).
    request: Option<InFlight>,
}

impl StreamGuard {
    /// The response started: its body reports progress as it moves.
    pub fn respond(mut self, body: crate::body::Body) -> Tracked {
        let request = self.request.take();
        self.state.progress();
        Tracked {
            inner: body,
            state: self.state.clone(),
            request,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        drop(request);
        let s = &self.state;
        let premature = s.premature.fetch_add(1, Ordering::Relaxed) + 1;
        if s.budget
            .exceeded(s.opened.load(Ordering::Relaxed), premature)
        {
            s.spend();
        }
    }
}

/// A response body that marks progress on every frame and at its end.
pub struct Tracked {
    inner: crate::body::Body,
    state: Arc<ConnState>,
    /// The request, in flight until the body ends or is dropped.
    request: Option<InFlight>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if r.is_ready() {
            self.state.progress();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        drop(self.request.take());
        self.state.progress();
    }
}

/// An I/O stream that records when bytes move (and whether any arrived), and
/// reads at most [`READ_SLICE`] bytes before letting other connections run.
pub struct Activity<S> {
    inner: S,
    state: Arc<ConnState>,
    /// Bytes read since the stream last returned `Pending`.
    burst: usize,
    scan: crate::h2scan::H2Scan,
    bucket: crate::h2scan::ControlBucket,
}

/// Why: tokio's cooperative budget counts I/O operations, not bytes, and the
/// sidecar is single-threaded. One 64 KiB read of a SETTINGS flood is ~4,400
/// frames, each answered with an ACK: measured (perf on the debug build), the
/// connection then held the thread ~35 ms per turn, and each step of another
/// client's request (read it, dial, forward, answer) waited for such a turn
/// (p99 ×6 of baseline). 4 KiB bounds a turn to ~270 frames; a bulk transfer
/// only pays a yield per 4 KiB.
pub const READ_SLICE: usize = 4 * 1024;

impl<S> Activity<S> {
    pub fn new(inner: S, state: Arc<ConnState>) -> Activity<S> {
        Activity {
            inner,
            state,
            burst: 0,
            scan: Default::default(),
            bucket: crate::h2scan::ControlBucket::new(Instant::now()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.state.is_spent() {
            // Not woken: the watchdog (same task, its own timer) ends it.
            return Poll::Pending;
        }
        if self.burst >= READ_SLICE {
            // Yield this turn (woken at once): fairness, not backpressure.
            self.burst = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // One read brings at most the rest of the slice: a large read buffer
        // must not hold the thread longer than a slice's worth of frames.
        let room = READ_SLICE - self.burst;
        let (r, n) = if buf.remaining() > room {
            let mut part = ReadBuf::new(buf.initialize_unfilled_to(room));
            let r = Pin::new(&mut self.inner).poll_read(cx, &mut part);
            let n = part.filled().len();
            buf.advance(n);
            (r, n)
        } else {
            let before = buf.filled().len();
            let r = Pin::new(&mut self.inner).poll_read(cx, buf);
            (r, buf.filled().len() - before)
        };
        if r.is_pending() {
            self.burst = 0;
        }
        self.burst += n;
        if n > 0 {
            self.state.io(true, n);
            let filled = buf.filled();
            let frames = self.scan.feed(&filled[filled.len() - n..]);
            let this = &mut *self;
            this.state
                .control_frames(&mut this.bucket, frames, Instant::now());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.state.io(false, n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.state.io(false, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// At most `max` connections at once on one listener.
#[derive(Debug)]
pub struct ConnCap {
    max: usize,
    live: Arc<AtomicUsize>,
    last_log: Mutex<Option<Instant>>,
}

/// One admitted connection; frees its slot when dropped.
#[derive(Debug)]
pub struct CapPermit(Arc<AtomicUsize>);

impl Drop for CapPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refusals are logged at most once per this interval (a flood must not flood the log).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Whether a refusal at `now` is logged, given the last logged one.
pub fn should_log(last: Option<Instant>, now: Instant, interval: Duration) -> bool {
    last.is_none_or(|l| now.duration_since(l) >= interval)
}

impl ConnCap {
    pub fn new(max: usize) -> ConnCap {
        ConnCap {
            max,
            live: Arc::new(AtomicUsize::new(0)),
            last_log: Mutex::new(None),
        }
    }

    /// A slot, or `None` when `max` connections are open.
    pub fn admit(&self) -> Option<CapPermit> {
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(CapPermit(self.live.clone()))
    }

    /// Whether this refusal should be logged (once per interval).
    pub fn log_refusal(&self) -> bool {
        let now = Instant::now();
        let mut last = self.last_log.lock().expect("cap log lock");
        if should_log(*last, now, REFUSAL_LOG_INTERVAL) {
            *last = Some(now);
            true
        } else {
            false
        }
    }
}

/// Connection-level counters, rendered with the other metrics.
#[derive(Debug, Default)]
pub struct ConnCounters {
    pub overflow_outbound: AtomicU64,
    pub overflow_inbound: AtomicU64,
    pub reset_flood: AtomicU64,
    pub control_flood: AtomicU64,
    pub first_byte: AtomicU64,
    pub http_idle: AtomicU64,
    pub grace_over: AtomicU64,
    pub tcp_idle: AtomicU64,
    pub protocol_error: AtomicU64,
    /// Connections refused because their peer is penalized (the `penalty` box).
    pub penalized_reset: AtomicU64,
    pub penalized_control: AtomicU64,
    pub penalized_protocol: AtomicU64,
}

impl ConnCounters {
    pub fn closed(&self, r: Reason) {
        let c = match r {
            Reason::FirstByte => &self.first_byte,
            Reason::Idle => &self.http_idle,
            Reason::ResetFlood => &self.reset_flood,
            Reason::ControlFlood => &self.control_flood,
            Reason::GraceOver => &self.grace_over,
            Reason::TcpIdle => &self.tcp_idle,
            Reason::ProtocolError => &self.protocol_error,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection refused at accept: its peer is penalized for `r`.
    pub fn penalized(&self, r: Reason) {
        let c = match r {
            Reason::ResetFlood => &self.penalized_reset,
            Reason::ProtocolError => &self.penalized_protocol,
            _ => &self.penalized_control,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        counter_family(
            out,
            "mesh_downstream_cx_overflow_total",
            "listener",
            &[
                ("outbound", &self.overflow_outbound),
                ("inbound", &self.overflow_inbound),
            ],
        );
        counter_family(
            out,
            "mesh_downstream_cx_closed_total",
            "reason",
            &[
                ("h2_premature_reset", &self.reset_flood),
                ("control_flood", &self.control_flood),
                ("first_byte_timeout", &self.first_byte),
                ("http_idle_timeout", &self.http_idle),
                ("goaway_grace_over", &self.grace_over),
                ("tcp_idle_timeout", &self.tcp_idle),
                ("h2_protocol_error", &self.protocol_error),
            ],
        );
        counter_family(
            out,
            "mesh_downstream_cx_penalized_total",
            "reason",
            &[
                ("h2_premature_reset", &self.penalized_reset),
                ("control_flood", &self.penalized_control),
                ("h2_protocol_error", &self.penalized_protocol),
            ],
        );
    }
}

/// One counter family with one label, a line per value.
fn counter_family(out: &mut String, name: &str, label: &str, values: &[(&str, &AtomicU64)]) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# TYPE {name} counter");
    for (v, c) in values {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{v}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests;
