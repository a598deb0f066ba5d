//! The state one downstream connection shares between its I/O wrapper, its
//! streams and its watchdog, and the guards by which requests and response
//! bodies report on it (counted when they are dropped, however that happens).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::decisions::{Facts, ResetBudget, CONTROL_BYTES};

/// Shared between a connection's I/O wrapper, its streams and its watchdog.
#[derive(Debug)]
pub struct ConnState {
    origin: Instant,
    first_byte: AtomicBool,
    /// Milliseconds after `origin`.
    last_io_ms: AtomicU64,
    last_progress_ms: AtomicU64,
    opened: AtomicU64,
    pub(super) premature: AtomicU64,
    /// Requests between service call and the end of their response body.
    pub(super) in_flight: AtomicU64,
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
    /// The control-frame bucket ran dry (see [`Activity`](super::Activity)).
    control_frames_spent: AtomicBool,
    /// The bytes are an opaque stream (TCP, or a tunnel after an HTTP
    /// upgrade): the application's data, not requests or control frames for
    /// this proxy, so no flood budget counts them. Why: with no request ever
    /// in flight, every byte of such a stream counted as a control flood, and
    /// reads stopped for good after 256 KiB from the client.
    opaque: AtomicBool,
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
            opaque: AtomicBool::new(false),
            flood: tokio::sync::Notify::new(),
        })
    }

    /// The state of an opaque TCP connection: bytes and idleness are
    /// counted, no flood budget applies (see [`ConnState::set_opaque`]).
    pub fn opaque() -> Arc<ConnState> {
        let s = ConnState::new(ResetBudget::DEFAULT);
        s.set_opaque();
        s
    }

    /// From now on the connection carries an opaque stream: an HTTP
    /// connection handed to a tunnel by an upgrade (WebSocket, CONNECT).
    pub fn set_opaque(&self) {
        self.opaque.store(true, Ordering::Relaxed);
    }

    /// Whether the bytes are an opaque stream (no flood budget applies).
    pub fn is_opaque(&self) -> bool {
        self.opaque.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    pub(super) fn io(&self, read: bool, n: usize) {
        if read {
            self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
            if self.in_flight.load(Ordering::Relaxed) == 0 && !self.is_opaque() {
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
    pub(super) fn quiet(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// `n` PING/SETTINGS frames were read at `now`: a control flood once the
    /// bucket is dry while no request is in flight.
    pub(super) fn control_frames(
        &self,
        bucket: &mut crate::h2scan::ControlBucket,
        n: u32,
        now: Instant,
    ) {
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
    type Error = crate::body::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
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
