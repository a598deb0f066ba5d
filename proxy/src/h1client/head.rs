//! The response head: parsed with `httparse` from the connection's buffer
//! into an `http::Response` whose header values share that buffer (no copy
//! per header), and the framing of the body that follows it (RFC 9112 §6.3).

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::conn::{Error, MAX_HEAD};

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
/// are dropped), `Ok(None)` when more bytes are needed.
pub(crate) fn take(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, Error> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(Error::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Error::Head(e)),
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Invalid("101 to a request that asked for no upgrade"));
        }
        if status.is_informational() {
            let _ = buf.split_to(len);
            continue;
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Where each name and value sits in the head, so the values can be
        // slices of it once the parser's borrow of the buffer ends.
        let base = buf.as_ptr() as usize;
        let mut spans = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
        let n = parsed.headers.len();
        for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            *span = (name, name + h.name.len(), value, value + h.value.len());
        }
        let head: Bytes = buf.split_to(len).freeze();
        let mut map = HeaderMap::with_capacity(n);
        for &(ns, ne, vs, ve) in &spans[..n] {
            let name =
                HeaderName::from_bytes(&head[ns..ne]).map_err(|_| Error::Invalid("header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| Error::Invalid("header value"))?;
            map.append(name, value);
        }
        let (framing, reuse_framing) = framing(&map, status, head_request)?;
        let keep_alive = reuse_framing && keeps_alive(&map, version);
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

/// The body's framing, and whether it leaves the connection reusable.
fn framing(
    map: &HeaderMap,
    status: StatusCode,
    head_request: bool,
) -> Result<(Framing, bool), Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, true));
    }
    let lengths = map.get_all(header::CONTENT_LENGTH);
    if let Some(te) = map.get_all(header::TRANSFER_ENCODING).iter().next_back() {
        let chunked = te
            .as_bytes()
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        // Both headers: the length is ignored, and so is the connection
        // afterwards (a smuggling hazard, RFC 9112 §6.3).
        let clean = lengths.iter().next().is_none();
        return Ok(if chunked {
            (Framing::Chunked, clean)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length = None;
    for v in lengths {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or(Error::Invalid("content-length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(Error::Invalid("content-length"));
        }
        length = Some(n);
    }
    Ok(match length {
        Some(0) => (Framing::Empty, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when told
/// `keep-alive`.
fn keeps_alive(map: &HeaderMap, version: Version) -> bool {
    let has = |token: &[u8]| {
        map.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    if version == Version::HTTP_10 {
        has(b"keep-alive")
    } else {
        !has(b"close")
    }
}
