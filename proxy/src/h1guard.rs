//! The I/O side of [`crate::h1scan`]: a wrapper around a downstream connection
//! that shows the HTTP/1 servers above it (the own one, [`crate::h1server`],
//! and hyper's) only request heads the scan accepted. A head is held back
//! until it is complete (at most [`h1scan::MAX_HEAD_BYTES`]); a refused request
//! is replaced, from its first byte, by a local request ([`REJECT_METHOD`])
//! that [`local_reply`] answers with 400 or 414 and `Connection: close`, so
//! hyper keeps the order of answers on the connection and nothing of the bad
//! request is forwarded. The rest of the client's bytes are read and dropped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::Body;
use crate::h1scan::{self, Chunk, Framing, Reject};

/// The method of the local request standing in for a refused one. A client
/// sending it itself only gets its own request refused.
pub const REJECT_METHOD: &str = "X-MESH-PROXY-REJECT";

/// Bytes read from the connection at a time while scanning.
const READ_CHUNK: usize = 16 * 1024;

/// The first read of a connection, before any buffer is allocated: most
/// request heads fit.
const FIRST_READ: usize = 2 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In a head: line ends before `resume` were looked at; `target_ok` once
    /// the request target is known to be within the limit.
    Head {
        resume: usize,
        target_ok: bool,
    },
    Body(u64),
    Chunked(Chunk),
    /// Not scanning: bytes pass straight through.
    Off,
    /// A request was refused: the local request is being handed over, then
    /// input is dropped.
    Rejected,
}

const HEAD: Mode = Mode::Head {
    resume: 0,
    target_ok: false,
};

pub struct Guarded<S> {
    inner: S,
    /// Read from `inner`, not yet given to hyper; `buf[..ready]` may be.
    buf: Vec<u8>,
    ready: usize,
    mode: Mode,
    /// Stream offset of `buf[0]`, and of the current request's first byte.
    base: u64,
    msg_start: u64,
}

impl<S> Guarded<S> {
    pub fn new(inner: S) -> Guarded<S> {
        Guarded {
            inner,
            buf: Vec::new(),
            ready: 0,
            mode: HEAD,
            base: 0,
            msg_start: 0,
        }
    }

    /// Scans `buf[ready..]`, moving `ready` over what hyper may see.
    fn advance(&mut self) {
        loop {
            let avail = self.buf.len() - self.ready;
            match self.mode {
                Mode::Off => {
                    self.ready = self.buf.len();
                    return;
                }
                Mode::Rejected => return,
                Mode::Head { resume, target_ok } => {
                    let head = &self.buf[self.ready..];
                    // Empty lines between messages: hyper skips them too.
                    if resume == 0 && head.starts_with(b"\r\n") {
                        self.ready += 2;
                        continue;
                    }
                    self.msg_start = self.base + self.ready as u64;
                    match h1scan::head_end(head, resume) {
                        Some(end) => match h1scan::analyze(&head[..end]) {
                            Err(r) => return self.reject(r),
                            Ok(framing) => {
                                self.ready += end;
                                self.mode = match framing {
                                    Framing::None => HEAD,
                                    Framing::Length(n) => Mode::Body(n),
                                    Framing::Chunked => Mode::Chunked(Chunk::Start),
                                    Framing::Untracked => Mode::Off,
                                };
                            }
                        },
                        None => {
                            let too_long = !target_ok && h1scan::target_too_long(head);
                            if too_long {
                                return self.reject(Reject::UriTooLong);
                            }
                            self.mode = if head.len() > h1scan::MAX_HEAD_BYTES {
                                // hyper answers 431 for it.
                                Mode::Off
                            } else {
                                Mode::Head {
                                    resume: head.len(),
                                    target_ok: head.len() > h1scan::MAX_URI_BYTES,
                                }
                            };
                            if self.mode != Mode::Off {
                                return;
                            }
                        }
                    }
                }
                Mode::Body(n) => {
                    if avail == 0 {
                        return;
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(avail);
                    self.ready += take;
                    let left = n - take as u64;
                    self.mode = if left == 0 { HEAD } else { Mode::Body(left) };
                }
                Mode::Chunked(state) => {
                    if avail == 0 {
                        return;
                    }
                    match h1scan::chunk_step(state, &self.buf[self.ready..]) {
                        Ok((Chunk::Done, used)) => {
                            self.ready += used;
                            self.mode = HEAD;
                        }
                        Ok((state, used)) => {
                            self.ready += used;
                            self.mode = Mode::Chunked(state);
                        }
                        Err(r) => return self.reject(r),
                    }
                }
            }
        }
    }

    /// Replaces the current request with the local one, if hyper has not seen
    /// its head yet; otherwise hyper's own body decoder fails it.
    fn reject(&mut self, why: Reject) {
        let Some(at) = self
            .msg_start
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
        else {
            self.mode = Mode::Off;
            self.ready = self.buf.len();
            return;
        };
        tracing::debug!(
            reason = why.token(),
            "HTTP/1 request refused before parsing"
        );
        self.buf.truncate(at);
        self.buf.extend_from_slice(
            format!(
                "{REJECT_METHOD} /{} HTTP/1.1\r\nhost: mesh-proxy\r\nconnection: close\r\n\r\n",
                why.token()
            )
            .as_bytes(),
        );
        self.ready = self.buf.len();
        self.mode = Mode::Rejected;
    }
}

impl<S: AsyncRead + Unpin> Guarded<S> {
    /// After a refusal: reads and drops what the client still sends (so the
    /// close is not a reset that could destroy the answer), never reporting
    /// EOF, which would make hyper abandon the local answer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 4096];
        for _ in 0..16 {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => continue,
                Poll::Ready(Ok(())) | Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> Guarded<S> {
    /// A body whose head hyper already has: read straight into hyper's buffer
    /// and only count or step through it; bytes past the body's end (the next
    /// head) are taken back to be scanned.
    fn poll_body_in_place(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = out.filled().len();
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, out))?;
        let new = &out.filled()[before..];
        if new.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let used = match self.mode {
            Mode::Body(n) => {
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(new.len());
                let left = n - take as u64;
                self.mode = if left == 0 { HEAD } else { Mode::Body(left) };
                take
            }
            Mode::Chunked(state) => match h1scan::chunk_step(state, new) {
                Ok((Chunk::Done, used)) => {
                    self.mode = HEAD;
                    used
                }
                Ok((state, used)) => {
                    self.mode = Mode::Chunked(state);
                    used
                }
                // The head is already with hyper: its decoder fails the body.
                Err(_) => {
                    self.mode = Mode::Off;
                    new.len()
                }
            },
            _ => new.len(),
        };
        self.base += used as u64;
        if used < new.len() {
            self.buf.extend_from_slice(&new[used..]);
            out.set_filled(before + used);
            self.advance();
            if used == 0 {
                // Nothing of this read is hyper's (the body had ended): hand
                // over what the scan allows, or come back for more.
                if self.ready > 0 {
                    return self.poll_read_ready(out);
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S> Guarded<S> {
    /// Hands `buf[..ready]` to hyper (never an empty read, which means EOF).
    fn poll_read_ready(&mut self, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.ready.min(out.remaining());
        if n == 0 {
            return Poll::Pending;
        }
        out.put_slice(&self.buf[..n]);
        self.buf.drain(..n);
        self.ready -= n;
        self.base += n as u64;
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> Guarded<S> {
    /// The read of a connection that has no buffer yet goes through a small
    /// stack buffer, and the 16 KiB one is allocated only once bytes came:
    /// a connection that stays silent (a flood of idle connections, a client
    /// that opens early) holds no read buffer of ours while it waits.
    fn poll_first_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut first = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut self.inner).poll_read(cx, &mut first) {
            Poll::Ready(Ok(())) => {
                let got = first.filled();
                if !got.is_empty() {
                    self.buf.reserve(READ_CHUNK);
                    self.buf.extend_from_slice(got);
                }
                Poll::Ready(Ok(got.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.ready > 0 {
                return this.poll_read_ready(out);
            }
            match this.mode {
                Mode::Off if this.buf.is_empty() => {
                    return Pin::new(&mut this.inner).poll_read(cx, out);
                }
                Mode::Rejected => return this.poll_drain(cx),
                Mode::Body(_) | Mode::Chunked(_) if this.buf.is_empty() => {
                    return this.poll_body_in_place(cx, out);
                }
                _ => {}
            }
            let polled = if this.buf.capacity() == 0 {
                this.poll_first_read(cx)
            } else {
                // Read into the spare capacity, not into a zero-filled slice: at
                // 16 KiB per read, zeroing cost more than the head scan (profile).
                this.buf.reserve(READ_CHUNK.max(out.remaining()));
                tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf)
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    if this.buf.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    // The client stopped mid-head: hyper sees what came, then EOF.
                    this.mode = Mode::Off;
                    this.ready = this.buf.len();
                }
                Poll::Ready(Ok(_)) => this.advance(),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The answer to a [`REJECT_METHOD`] request: the refusal's status, why, and
/// `Connection: close` (the rest of the connection's bytes are not trusted).
pub fn local_reply(path: &str) -> Response<Body> {
    let why = Reject::from_token(path.trim_start_matches('/')).unwrap_or(Reject::BareLf);
    let status = StatusCode::from_u16(why.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = crate::util::full(status, why.message());
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests;
