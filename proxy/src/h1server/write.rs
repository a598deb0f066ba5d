//! The response head as HTTP/1.1 bytes, and how the body after it is framed,
//! as hyper's server frames it: `Content-Length` when the length is known
//! (given, or an exact size hint), chunked otherwise; no body for `HEAD`,
//! 1xx, 204 and 304; a `date` when the response has none.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header;
use http::{response, StatusCode};

use crate::h1fields;
use crate::h1peer::{self, PeerMemo};

/// How the body is written after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Nothing is written (the body is dropped unread).
    None,
    Length(u64),
    Chunked,
}

/// What the writer knows of the body when the head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyHint {
    pub(crate) end_stream: bool,
    pub(crate) exact: Option<u64>,
}

/// Appends the head of `parts` to `out`; returns the body's framing and
/// whether the connection ends after this response. `close` adds
/// `connection: close` unless the response already says so; a response that
/// says so, or a 101 (no upgrade is served here), ends the connection too.
/// The peer metadata header is written as `peer` decides.
pub(crate) fn head(
    out: &mut Vec<u8>,
    parts: &response::Parts,
    head_request: bool,
    body: BodyHint,
    close: bool,
    peer: &mut PeerMemo,
) -> (Framing, bool) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut length: Option<u64> = None;
    let mut has_date = false;
    let mut has_close = false;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            // Hop-by-hop: this connection's framing is decided below.
            continue;
        }
        if name == crate::peer::HEADER {
            h1peer::write(out, value, peer.send(value));
            continue;
        }
        if name == header::CONTENT_LENGTH {
            if no_body && status != StatusCode::NOT_MODIFIED {
                continue;
            }
            match h1fields::content_length(value.as_bytes()) {
                Some(n) if length.is_none() => length = Some(n),
                // A second or unreadable length is dropped; the body's own
                // size decides below.
                _ => continue,
            }
        } else if name == header::DATE {
            has_date = true;
        } else if name == header::CONNECTION {
            has_close |= h1fields::has_token(value.as_bytes(), b"close");
        }
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if no_body {
        Framing::None
    } else if let Some(n) = length {
        if head_request {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else if body.end_stream || body.exact.is_some() {
        let n = if body.end_stream {
            0
        } else {
            body.exact.unwrap_or(0)
        };
        out.extend_from_slice(b"content-length: ");
        h1fields::push_decimal(out, n);
        out.extend_from_slice(b"\r\n");
        if head_request {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else if head_request {
        Framing::None
    } else {
        line(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if close && !has_close {
        line(out, b"connection", b"close");
    }
    if !has_date {
        DATE.with(|d| line(out, b"date", &d.borrow_mut().now()));
    }
    out.extend_from_slice(b"\r\n");
    (
        framing,
        close || has_close || status == StatusCode::SWITCHING_PROTOCOLS,
    )
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line.
pub(crate) fn chunk_size(out: &mut Vec<u8>, n: usize) {
    h1fields::push_hex(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, without trailers (hyper's server writes them only to a
/// client that sent `TE: trailers`, and no HTTP/1 client here asks).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

thread_local! {
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { secs: 0, text: [0; 29] }) };
}

/// The IMF-fixdate of the current second, formatted once per second per
/// thread.
struct CachedDate {
    secs: u64,
    text: [u8; 29],
}

impl CachedDate {
    fn now(&mut self) -> [u8; 29] {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == self.text.len() {
                self.text.copy_from_slice(s.as_bytes());
                self.secs = secs;
            }
        }
        self.text
    }
}
