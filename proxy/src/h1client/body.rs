//! The response body, read off the connection by whoever polls it (the
//! downstream connection's task: no task of its own, no channel). When its
//! last byte is read the connection goes back to its pool at once; dropped
//! before that, the connection is closed with it.
//!
//! The chunked decoder is a plain function over the buffer ([`next_chunk`]).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use hyper::body::Frame;

use super::conn::{Conn, Error, Reuse};
use super::head::Framing;
use crate::body::BodyError;
use crate::h1scan::{self, Chunk, MAX_HEAD_BYTES};

/// How much is asked of the socket per read of a body.
const READ_CHUNK: usize = 16 * 1024;

/// What [`next_chunk`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// More bytes are needed.
    More,
    Data(Bytes),
    /// The body ended, with these trailers (if any).
    End(Option<HeaderMap>),
}

/// Decodes what it can of a chunked body from the front of `buf`. The framing
/// is [`h1scan::chunk_step`]'s, hyper's grammar byte for byte (the same the
/// downstream guard checks request bodies with); this only takes the data out
/// and, at the end, the trailer section, held until it is complete.
pub(crate) fn next_chunk(state: &mut Chunk, buf: &mut BytesMut) -> Result<Step, Error> {
    let bad = |_| Error::Body("chunked framing");
    loop {
        match *state {
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = (buf.len() as u64).min(left) as usize;
                *state = h1scan::chunk_step(*state, &buf[..n]).map_err(bad)?.0;
                return Ok(Step::Data(buf.split_to(n).freeze()));
            }
            // After the last chunk's size line: trailer fields, then CRLF.
            Chunk::EndCr => {
                let (end, used) = h1scan::chunk_step(Chunk::EndCr, buf).map_err(bad)?;
                if end != Chunk::Done {
                    return too_long(buf, MAX_HEAD_BYTES);
                }
                let section = buf.split_to(used);
                *state = Chunk::Done;
                return trailers(&section).map(Step::End);
            }
            Chunk::Done => return Ok(Step::End(None)),
            // A size line or a chunk's CRLF: a byte at a time, up to the data
            // or the trailer section.
            _ => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                *state = h1scan::chunk_step(*state, &buf[..1]).map_err(bad)?.0;
                buf.advance(1);
            }
        }
    }
}

/// The trailer fields of a complete trailer section (ending in an empty line).
fn trailers(section: &[u8]) -> Result<Option<HeaderMap>, Error> {
    if section == b"\r\n" {
        return Ok(None);
    }
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(section, &mut fields)
    else {
        return Err(Error::Body("trailers"));
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = http::HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| Error::Body("trailer name"))?;
        let value =
            http::HeaderValue::from_bytes(f.value).map_err(|_| Error::Body("trailer value"))?;
        map.append(name, value);
    }
    Ok(Some(map))
}

/// `More`, unless `buf` already holds more than a trailer section may be.
fn too_long(buf: &BytesMut, limit: usize) -> Result<Step, Error> {
    if buf.len() > limit {
        Err(Error::Body("trailer section too long"))
    } else {
        Ok(Step::More)
    }
}

/// Where the body is.
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

/// A response body read straight off its connection.
pub struct ResponseBody<R: Reuse> {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    reuse: Option<R>,
}

impl<R: Reuse> ResponseBody<R> {
    pub(crate) fn new(conn: Conn, framing: Framing, keep_alive: bool, reuse: R) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Start),
            Framing::Close => State::Close,
        };
        let mut b = ResponseBody {
            conn: Some(conn),
            state,
            keep_alive,
            reuse: Some(reuse),
        };
        if matches!(b.state, State::Done) {
            b.finish();
        }
        b
    }

    /// The body is read: the connection goes back to its pool if it may
    /// carry another request (nothing unread after the response).
    fn finish(&mut self) {
        self.state = State::Done;
        let (Some(conn), Some(reuse)) = (self.conn.take(), self.reuse.take()) else {
            return;
        };
        if self.keep_alive && conn.buf.is_empty() {
            reuse.reuse(conn);
        }
    }

    /// The body cannot go on: the connection is closed, never reused.
    fn fail(&mut self) {
        self.state = State::Done;
        self.conn = None;
        self.reuse = None;
    }

    /// Reads more of the body into the connection's buffer; `Ok(false)` at
    /// the end of the stream.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Error>> {
        let conn = self
            .conn
            .as_mut()
            .expect("connection held until the body ends");
        conn.buf.reserve(READ_CHUNK);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut conn.io),
            cx,
            &mut conn.buf
        ))?;
        Poll::Ready(Ok(n > 0))
    }
}

impl<R: Reuse> hyper::body::Body for ResponseBody<R> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => {
                    let left = *left;
                    let buf = &mut this.conn.as_mut().expect("held").buf;
                    if !buf.is_empty() {
                        let n = (buf.len() as u64).min(left) as usize;
                        let data = buf.split_to(n).freeze();
                        if n as u64 == left {
                            this.finish();
                        } else {
                            this.state = State::Length(left - n as u64);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Close => {
                    let buf = &mut this.conn.as_mut().expect("held").buf;
                    if !buf.is_empty() {
                        let data = buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(chunk) => {
                    let buf = &mut this.conn.as_mut().expect("held").buf;
                    match next_chunk(chunk, buf) {
                        Ok(Step::More) => {}
                        Ok(Step::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                        Ok(Step::End(trailers)) => {
                            this.finish();
                            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                        }
                        Err(e) => {
                            this.fail();
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                }
            }
            match ready!(this.fill(cx)) {
                Ok(true) => {}
                // The server closed: the end of a close-delimited body, a
                // truncated one otherwise.
                Ok(false) if matches!(this.state, State::Close) => {
                    this.fail();
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    this.fail();
                    return Poll::Ready(Some(Err(Error::BodyClosed.into())));
                }
                Err(e) => {
                    this.fail();
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.state {
            State::Done => hyper::body::SizeHint::with_exact(0),
            State::Length(n) => hyper::body::SizeHint::with_exact(n),
            _ => hyper::body::SizeHint::default(),
        }
    }
}
