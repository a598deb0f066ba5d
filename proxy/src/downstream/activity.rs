//! [`Activity`], the I/O wrapper every downstream connection is read and
//! written through: it feeds the connection's state and bounds how long one
//! connection's reads hold the (single) thread. The one part of this module
//! that does I/O, hence apart.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::conn_state::ConnState;

/// An I/O stream that records when bytes move (and whether any arrived), and
/// reads at most [`READ_SLICE`] bytes before letting other connections run.
pub struct Activity<S> {
    inner: S,
    pub(super) state: Arc<ConnState>,
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
            if self.state.is_opaque() {
                return r;
            }
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
