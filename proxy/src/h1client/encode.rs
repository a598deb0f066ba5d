//! The request side: which requests the own client takes (a whole body, no
//! upgrade, HTTP/1.1) and their bytes on the wire, head and body in one
//! buffer so the exchange costs one write.
//!
//! It writes what hyper's HTTP/1 client would for the same request: the
//! header map as it is (lower-case names), no `Transfer-Encoding`, and a
//! `Content-Length` only when there is a body and the map has none.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame};

use crate::body::{Body, BodyError};
use crate::h1fields;

/// A request ready to be written, and what its response's framing depends on.
pub struct Outgoing {
    pub(crate) bytes: Vec<u8>,
    /// A `HEAD` request's response has no body whatever its headers say.
    pub(crate) head: bool,
    /// The peer metadata header, not written yet: the connection decides
    /// whether it goes, as the last line of the head at this offset
    /// ([`crate::h1peer`]).
    pub(crate) peer: PeerLine,
}

/// The request's bytes when the own client can send it; otherwise the request
/// back, with its body as it was (a frame already taken from it is put back
/// in front), for hyper's client. Boxed: the fallback is the rare path.
pub fn outgoing(req: Request<Body>) -> Result<Outgoing, Box<Request<Body>>> {
    if req.version() != Version::HTTP_11
        || req.method() == Method::CONNECT
        || req.headers().contains_key(header::UPGRADE)
    {
        return Err(Box::new(req));
    }
    let (parts, mut body) = req.into_parts();
    let whole = match take_whole(&mut body) {
        Ok(w) => w,
        Err(first) => {
            let body = match first {
                Some(f) => Prepend {
                    first: Some(f),
                    rest: body,
                }
                .boxed(),
                None => body,
            };
            return Err(Box::new(Request::from_parts(parts, body)));
        }
    };
    match encode(&parts, &whole) {
        Some((bytes, peer)) => Ok(Outgoing {
            bytes,
            head: parts.method == Method::HEAD,
            peer,
        }),
        None => Err(Box::new(Request::from_parts(
            parts,
            http_body_util::Full::new(whole)
                .map_err(|n| match n {})
                .boxed(),
        ))),
    }
}

/// The body's bytes if they are all there now (none, or one buffered frame):
/// polled once, without waiting. Otherwise what that poll took, if anything.
#[allow(clippy::type_complexity)]
fn take_whole(body: &mut Body) -> Result<Bytes, Option<Result<Frame<Bytes>, BodyError>>> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(&mut *body).poll_frame(&mut cx) {
        Poll::Ready(None) => Ok(Bytes::new()),
        Poll::Ready(Some(Ok(frame))) if frame.is_data() && body.is_end_stream() => {
            Ok(frame.into_data().unwrap_or_default())
        }
        Poll::Ready(Some(other)) => Err(Some(other)),
        Poll::Pending => Err(None),
    }
}

/// The peer metadata header of an encoded request: where its line goes, and
/// its value.
type PeerLine = Option<(usize, http::HeaderValue)>;

/// Head and body, without the peer metadata header, and where it goes; `None` when
/// the head's `Content-Length` contradicts the body (hyper's client then
/// decides what to do with it).
pub(crate) fn encode(parts: &http::request::Parts, body: &Bytes) -> Option<(Vec<u8>, PeerLine)> {
    let target = match parts.uri.path_and_query() {
        Some(p) if !p.as_str().is_empty() => p.as_str(),
        _ => "/",
    };
    let mut out = Vec::with_capacity(256 + parts.headers.len() * 32 + body.len());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_length = false;
    let mut peer = None;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == crate::peer::HEADER {
            peer = Some(value);
            continue;
        }
        if name == header::CONTENT_LENGTH {
            let n = h1fields::content_length(value.as_bytes())?;
            if n != body.len() as u64 || has_length {
                return None;
            }
            has_length = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() && !has_length {
        out.extend_from_slice(b"content-length: ");
        h1fields::push_decimal(&mut out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    let peer = peer.map(|v| (out.len(), v.clone()));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Some((out, peer))
}

/// A body with one frame, already taken from it, put back in front.
struct Prepend {
    first: Option<Result<Frame<Bytes>, BodyError>>,
    rest: Body,
}

impl hyper::body::Body for Prepend {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(f));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }
}
