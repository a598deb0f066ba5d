//! The sidecar's own HTTP/1.1 server for the plain requests that make up most
//! mesh traffic: HTTP/1.1, no body or a `Content-Length` body up to
//! [`head::MAX_BODY`], no upgrade, `CONNECT` or `Expect`. It runs on the
//! connection's own task: parses a head with httparse (header values are
//! slices of the read buffer), reads the body whole, calls the handler, and
//! writes the response head with the body frames that are ready in one write.
//!
//! hyper's server would run a dispatcher per connection with a header map
//! conversion, a body channel and a timer per request; this path does without
//! them. Anything else a client sends (HTTP/2's preface, HTTP/1.0, a chunked
//! or large body, an upgrade, a head hyper would refuse) ends this server with
//! [`Ended::HandOff`]: the bytes read so far stay in the buffer and hyper's
//! server, reading them first ([`Rewind`]), serves the connection from that
//! request on, exactly as it did before this server existed.

mod head;
mod rewind;
#[cfg(test)]
mod tests;
mod write;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::body::{Body, BodyError};
pub use crate::h1peer::PeerMemo;
use crate::h1scan::MAX_HEAD_BYTES;
pub use rewind::Rewind;
use write::{BodyHint, Framing};

/// A started request head must be complete within this (slowloris); hyper's
/// server, taking a connection over, applies the same.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Room made in the read buffer before each read.
const READ_RESERVE: usize = 4 * 1024;

/// Response bytes gathered before they are written even though more of the
/// body is ready.
const WRITE_HIGH: usize = 64 * 1024;

/// How [`serve`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The connection is done: the client closed it between requests, or a
    /// response ended it (`Connection: close`, a drain, a bad request).
    Closed,
    /// The request at the front of the buffer is hyper's (see the module
    /// header); nothing of it was answered.
    HandOff,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the request: {0}")]
    Read(io::Error),
    #[error("writing the response: {0}")]
    Write(io::Error),
    #[error("request head not complete within {0:?}")]
    HeadTimeout(Duration),
    #[error("connection closed inside a request ({0} bytes of it read)")]
    Truncated(usize),
    #[error("response body failed: {0}")]
    Body(BodyError),
    #[error("response body ended {0} bytes short of its content-length")]
    Short(u64),
    #[error("response body is longer than its content-length")]
    Long,
}

/// Serves the requests of `io` with `handler`, in order, until the
/// connection ends or a request is hyper's. `buf` holds what was read and not
/// yet served. `shutdown` asks for a graceful end: an idle connection is
/// closed, a request being served gets `Connection: close`. `peer` is the
/// connection's peer metadata exchange ([`crate::h1peer`]), left for whoever
/// serves the connection next.
pub async fn serve<S, F, Fut, B>(
    io: &mut S,
    buf: &mut BytesMut,
    shutdown: &AtomicBool,
    peer: &mut PeerMemo,
    handler: F,
) -> Result<Ended, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Request<Body>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: hyper::body::Body<Data = Bytes, Error = BodyError> + Unpin,
{
    let mut out: Vec<u8> = Vec::new();
    let mut repeats = crate::h1repeat::Repeats::default();
    loop {
        let (head_len, body_len, keep_alive) = match read_head(io, buf, shutdown).await? {
            Next::Take {
                head_len,
                body_len,
                keep_alive,
            } => (head_len, body_len, keep_alive),
            Next::Ended(e) => return Ok(e),
        };
        while buf.len() < head_len + body_len {
            if read(io, buf, None).await?.is_some_and(|n| n == 0) {
                return Err(Error::Truncated(buf.len()));
            }
        }
        let msg = buf.split_to(head_len + body_len).freeze();
        let req = match head::request(&msg.slice(..head_len), &mut repeats, peer) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "bad request head");
                let mut r = crate::util::full(StatusCode::BAD_REQUEST, e.reply());
                r.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                respond(io, &mut out, r, false, true, peer).await?;
                let _ = io.shutdown().await;
                return Ok(Ended::Closed);
            }
        };
        let head_request = req.method() == Method::HEAD;
        let body = if body_len == 0 {
            http_body_util::Empty::new().map_err(|n| match n {}).boxed()
        } else {
            http_body_util::Full::new(msg.slice(head_len..))
                .map_err(|n| match n {})
                .boxed()
        };
        drop(msg);
        let resp = handler(req.map(|()| body)).await;
        let close = !keep_alive || shutdown.load(Ordering::Relaxed);
        if respond(io, &mut out, resp, head_request, close, peer).await? {
            let _ = io.shutdown().await;
            return Ok(Ended::Closed);
        }
    }
}

/// What comes next on the connection.
enum Next {
    /// A whole head this server takes.
    Take {
        head_len: usize,
        body_len: usize,
        keep_alive: bool,
    },
    /// No request for this server: the connection ended, a drain came
    /// between requests, or the next request is hyper's.
    Ended(Ended),
}

/// Reads until the next head is whole.
async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    shutdown: &AtomicBool,
) -> Result<Next, Error> {
    let mut deadline = None;
    loop {
        match head::probe(buf) {
            head::Probe::Take {
                head_len,
                body_len,
                keep_alive,
            } => {
                return Ok(Next::Take {
                    head_len,
                    body_len,
                    keep_alive,
                })
            }
            head::Probe::HandOff => return Ok(Next::Ended(Ended::HandOff)),
            // hyper answers it (431).
            head::Probe::Partial if buf.len() >= MAX_HEAD_BYTES => {
                return Ok(Next::Ended(Ended::HandOff))
            }
            head::Probe::Partial => {}
        }
        let n = if buf.is_empty() {
            // Between requests: the drain may end the connection here.
            read(io, buf, Some(shutdown)).await?
        } else {
            // A started head: no timer at all unless it came in pieces.
            let at =
                *deadline.get_or_insert_with(|| tokio::time::Instant::now() + HEADER_READ_TIMEOUT);
            tokio::time::timeout_at(at, read(io, buf, None))
                .await
                .map_err(|_| Error::HeadTimeout(HEADER_READ_TIMEOUT))??
        };
        match n {
            None => return Ok(Next::Ended(Ended::Closed)),
            Some(0) if buf.is_empty() => return Ok(Next::Ended(Ended::Closed)),
            Some(0) => return Err(Error::Truncated(buf.len())),
            Some(_) => {}
        }
    }
}

/// One read into `buf`: `Some(0)` at the end of the stream, `None` when
/// `shutdown` (checked before each attempt) was asked for.
async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    shutdown: Option<&AtomicBool>,
) -> Result<Option<usize>, Error> {
    poll_fn(|cx| {
        if shutdown.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Poll::Ready(Ok(None));
        }
        buf.reserve(READ_RESERVE);
        tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf).map_ok(Some)
    })
    .await
    .map_err(Error::Read)
}

/// Writes `resp`; returns whether the connection ends after it.
async fn respond<S, B>(
    io: &mut S,
    out: &mut Vec<u8>,
    resp: Response<B>,
    head_request: bool,
    close: bool,
    peer: &mut PeerMemo,
) -> Result<bool, Error>
where
    S: AsyncWrite + Unpin,
    B: hyper::body::Body<Data = Bytes, Error = BodyError> + Unpin,
{
    let (parts, mut body) = resp.into_parts();
    let hint = BodyHint {
        end_stream: body.is_end_stream(),
        exact: body.size_hint().exact(),
    };
    out.clear();
    let (framing, close) = write::head(out, &parts, head_request, hint, close, peer);
    drop(parts);
    write_body(io, out, &mut body, framing).await?;
    Ok(close)
}

/// Writes the body after the head already in `out`. A frame that is ready
/// joins the bytes waiting to be written; they are written when the body has
/// nothing more ready, at its end, or past [`WRITE_HIGH`].
async fn write_body<S, B>(
    io: &mut S,
    out: &mut Vec<u8>,
    body: &mut B,
    framing: Framing,
) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
    B: hyper::body::Body<Data = Bytes, Error = BodyError> + Unpin,
{
    let mut left = match framing {
        Framing::None | Framing::Length(0) => return flush(io, out).await,
        Framing::Length(n) => n,
        Framing::Chunked => 0,
    };
    loop {
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(f) => f,
            Poll::Pending => {
                flush(io, out).await?;
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None if framing == Framing::Chunked => {
                out.extend_from_slice(write::LAST_CHUNK);
                return flush(io, out).await;
            }
            None => {
                flush(io, out).await?;
                return if left == 0 {
                    Ok(())
                } else {
                    Err(Error::Short(left))
                };
            }
            Some(Err(e)) => return Err(Error::Body(e)),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                // Trailers: not written (see `write::LAST_CHUNK`).
                Err(_) => continue,
            },
        };
        if framing == Framing::Chunked {
            if !data.is_empty() {
                write::chunk_size(out, data.len());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            }
        } else {
            if data.len() as u64 > left {
                return Err(Error::Long);
            }
            out.extend_from_slice(&data);
            left -= data.len() as u64;
            if left == 0 && body.is_end_stream() {
                return flush(io, out).await;
            }
        }
        if out.len() >= WRITE_HIGH {
            flush(io, out).await?;
        }
    }
}

async fn flush<S: AsyncWrite + Unpin>(io: &mut S, out: &mut Vec<u8>) -> Result<(), Error> {
    if !out.is_empty() {
        io.write_all(out).await.map_err(Error::Write)?;
        out.clear();
    }
    // A TLS session holds what it could not write yet.
    io.flush().await.map_err(Error::Write)
}
