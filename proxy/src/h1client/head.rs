//! The response head: parsed with `httparse` from the connection's buffer
//! into an `http::Response` whose header values share that buffer (no copy
//! per header), and the framing of the body that follows it (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::conn::Error;
use crate::h1fields;
use crate::h1peer::PeerMemo;
use crate::h1repeat::{BadPart, Repeats};
use crate::h1scan::MAX_HEAD_BYTES;

/// The same 100 headers the downstream side allows.
const MAX_HEADERS: usize = 100;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// A complete response head taken off the front of the buffer.
pub(crate) struct Head {
    pub(crate) response: Response<()>,
    pub(crate) framing: Framing,
    /// The connection may carry another request after this response.
    pub(crate) keep_alive: bool,
}

/// Takes a complete final response head off `buf` (interim 1xx responses
/// are dropped), `Ok(None)` when more bytes are needed. `repeats` holds the
/// long values of the connection's earlier heads, `peer` its peer metadata
/// (put back when the server left it out).
pub(crate) fn take(
    buf: &mut BytesMut,
    head_request: bool,
    repeats: &mut Repeats,
    peer: &mut PeerMemo,
) -> Result<Option<Head>, Error> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // First only where the head ends (the slots need no initialising);
        // then, with the head frozen, once more so that each header value can
        // be a slice of it rather than a copy.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let config = httparse::ParserConfig::default();
        let mut probe = httparse::Response::new(&mut []);
        let len = match config.parse_response_with_uninit_headers(&mut probe, buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(Error::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Error::Head(e)),
        };
        let head: Bytes = buf.split_to(len).freeze();
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        config
            .parse_response_with_uninit_headers(&mut parsed, &head, &mut slots)
            .map_err(Error::Head)?;
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Invalid("101 to a request that asked for no upgrade"));
        }
        if status.is_informational() {
            continue;
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Room for the peer metadata an inbound sidecar adds to the answer
        // (see `h1server::head::request` on the size).
        let mut map = HeaderMap::with_capacity(parsed.headers.len() + 2);
        // What the framing depends on, noted while the map is built (no
        // lookups afterwards).
        let mut seen = Seen::default();
        for h in parsed.headers.iter() {
            let (name, value) = peer
                .parse(repeats, &head, h.name.as_bytes(), h.value)
                .map_err(|p| {
                    Error::Invalid(match p {
                        BadPart::Name => "header name",
                        BadPart::Value => "header value",
                    })
                })?;
            seen.note(&name, &value)?;
            map.append(name, value);
        }
        if let Some(v) = peer.end_head() {
            map.append(crate::peer::HEADER, v);
        }
        let (framing, reuse_framing) = framing(&seen, status, head_request);
        let keep_alive = reuse_framing
            && if version == Version::HTTP_10 {
                seen.keep_alive
            } else {
                !seen.close
            };
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = map;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
        }));
    }
}

/// The framing headers of a response head.
#[derive(Default)]
struct Seen {
    /// `Content-Length`, all copies agreeing.
    length: Option<u64>,
    /// The last `Transfer-Encoding` value ends in `chunked`.
    chunked: Option<bool>,
    /// `Connection: close` / `keep-alive` tokens.
    close: bool,
    keep_alive: bool,
}

impl Seen {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Error> {
        if name == header::CONTENT_LENGTH {
            let n = h1fields::content_length(value.as_bytes())
                .ok_or(Error::Invalid("content-length"))?;
            if self.length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("content-length"));
            }
            self.length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            let last = value.as_bytes().rsplit(|b| *b == b',').next();
            self.chunked =
                Some(last.is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked")));
        } else if name == header::CONNECTION {
            self.close |= h1fields::has_token(value.as_bytes(), b"close");
            self.keep_alive |= h1fields::has_token(value.as_bytes(), b"keep-alive");
        }
        Ok(())
    }
}

/// The body's framing, and whether it leaves the connection reusable.
fn framing(seen: &Seen, status: StatusCode, head_request: bool) -> (Framing, bool) {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return (Framing::Empty, true);
    }
    match (seen.chunked, seen.length) {
        // Both headers: the length is ignored, and so is the connection
        // afterwards (a smuggling hazard, RFC 9112 §6.3).
        (Some(true), length) => (Framing::Chunked, length.is_none()),
        (Some(false), _) => (Framing::Close, false),
        (None, Some(0)) => (Framing::Empty, true),
        (None, Some(n)) => (Framing::Length(n), true),
        (None, None) => (Framing::Close, false),
    }
}
