//! The request head: a first parse (into uninitialised slots, nothing
//! copied) that finds where the head ends and whether this server takes the
//! request at all ([`Probe`]), and a second over the frozen head that builds
//! the `http::Request` with header values sliced from it.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, Request, Uri, Version};

use crate::h1fields;
use crate::h1peer::PeerMemo;
use crate::h1repeat::{BadPart, Repeats};

/// The 100 headers hyper's server allows (Envoy's default count): a head with
/// more goes to hyper, which answers 431.
const MAX_HEADERS: usize = 100;

/// Largest request body this server reads whole before calling the handler:
/// the proxy's retry buffer (`outbound::forward`), so a body this server
/// takes is one the handler would have buffered anyway.
pub(crate) const MAX_BODY: u64 = 64 * 1024;

/// What the first parse found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// More bytes are needed to see the whole head.
    Partial,
    /// A request this server serves: its head is `head_len` bytes, a body of
    /// `body_len` follows.
    Take {
        head_len: usize,
        body_len: usize,
        keep_alive: bool,
    },
    /// Anything else (HTTP/1.0, HTTP/2's preface, `CONNECT`, an upgrade,
    /// `Expect`, a chunked or large body, a malformed head): hyper's server
    /// takes the connection from this request on.
    HandOff,
}

/// Looks at the head at the front of `buf`.
pub(crate) fn probe(buf: &[u8]) -> Probe {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Probe::Partial,
        Err(_) => return Probe::HandOff,
    };
    if req.version != Some(1) || req.method == Some("CONNECT") {
        return Probe::HandOff;
    }
    let mut length: Option<u64> = None;
    let mut keep_alive = true;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match h1fields::content_length(h.value) {
                // One length, small enough to buffer (duplicates and bad
                // values are hyper's to refuse).
                Some(n) if length.is_none() && n <= MAX_BODY => length = Some(n),
                _ => return Probe::HandOff,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Probe::HandOff;
        } else if name.eq_ignore_ascii_case(b"connection") {
            keep_alive &= !h1fields::has_token(h.value, b"close");
        }
    }
    Probe::Take {
        head_len,
        body_len: length.unwrap_or(0) as usize,
        keep_alive,
    }
}

/// Why a head [`probe`] took cannot become a request (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Invalid {
    #[error("invalid request method")]
    Method,
    #[error("invalid request target")]
    Target,
    #[error("invalid header {0}")]
    Header(&'static str),
}

impl Invalid {
    /// The body of the 400 answer.
    pub(crate) fn reply(self) -> &'static str {
        match self {
            Invalid::Method => "invalid request method\n",
            Invalid::Target => "invalid request target\n",
            Invalid::Header(_) => "invalid request header\n",
        }
    }
}

/// Builds the request of a head [`probe`] took; `head` is exactly that head,
/// `repeats` the long values of the connection's earlier heads, `peer` the
/// connection's peer metadata (put back when the client left it out).
pub(crate) fn request(
    head: &Bytes,
    repeats: &mut Repeats,
    peer: &mut PeerMemo,
) -> Result<Request<()>, Invalid> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    // Cannot fail: the same bytes parsed completely in `probe`.
    let _ = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        head,
        &mut slots,
    );
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Invalid::Method)?;
    let path = parsed.path.unwrap_or_default();
    let uri =
        Uri::from_maybe_shared(head.slice_ref(path.as_bytes())).map_err(|_| Invalid::Target)?;
    // Room for the two headers a sidecar adds (x-request-id, XFCC) without
    // growing the map (a rehash and two reallocations). Not more: a map of up
    // to six entries is one allocation glibc serves from its per-thread cache,
    // a larger one takes its slow path (610 instead of 250 instructions).
    let mut map = HeaderMap::with_capacity(parsed.headers.len() + 2);
    for h in parsed.headers.iter() {
        let (name, value) = peer
            .parse(repeats, head, h.name.as_bytes(), h.value)
            .map_err(|p| {
                Invalid::Header(match p {
                    BadPart::Name => "name",
                    BadPart::Value => "value",
                })
            })?;
        map.append(name, value);
    }
    if let Some(v) = peer.end_head() {
        map.append(crate::peer::HEADER, v);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Ok(req)
}
