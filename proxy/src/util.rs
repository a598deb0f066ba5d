//! Small HTTP helpers shared by the inbound and outbound paths: canned
//! responses, hop-by-hop header handling, request ids, the request-smuggling
//! guard, and building the request as sent upstream.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};

use crate::body::Body;
use crate::snapshot::Protocol;

pub fn full(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(msg.as_bytes()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) fn strip_hop_by_hop(h: &mut http::HeaderMap, keep_upgrade: bool) {
    if let Some(conn) = h
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        for name in conn.split(',').map(str::trim) {
            if keep_upgrade && name.eq_ignore_ascii_case("upgrade") {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                h.remove(n);
            }
        }
    }
    // `te: trailers` is the one TE value that crosses a proxy: gRPC servers
    // (grpc-core) refuse a call without it, and HTTP/2 allows exactly this
    // value. Envoy keeps it the same way.
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| is_te_trailers(v.as_bytes()));
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == "connection" || name == "upgrade") {
            continue;
        }
        h.remove(name);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a TE value asks for trailers only (`trailers`, any case, spaces around).
fn is_te_trailers(v: &[u8]) -> bool {
    v.trim_ascii().eq_ignore_ascii_case(b"trailers")
}

pub(crate) fn request_id() -> HeaderValue {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    let v = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    );
    HeaderValue::from_str(&v).expect("hex is a valid header value")
}

pub(crate) fn protocol_label(v: Version, headers: &http::HeaderMap) -> &'static str {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"));
    match (grpc, v) {
        (true, _) => "grpc",
        (false, Version::HTTP_2) => "http",
        _ => "http",
    }
}

pub(crate) fn content_length(h: &http::HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Request-smuggling guard: both framings at once, or a header that looks like a
/// framing header to a lenient back end (`Content_Length`, `Transfer--Encoding`)
/// is refused and the connection closed, so no later bytes on it are parsed.
pub(crate) fn framing_hazard(h: &http::HeaderMap) -> Option<&'static str> {
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Some("both content-length and transfer-encoding\n");
    }
    for name in h.keys() {
        let n = name.as_str();
        if n == "content-length" || n == "transfer-encoding" {
            continue;
        }
        let squashed: String = n.chars().filter(char::is_ascii_alphanumeric).collect();
        if squashed == "contentlength" || squashed == "transferencoding" {
            return Some("header name resembles a message framing header\n");
        }
    }
    None
}

pub(crate) fn authority_of<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

pub(crate) fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

pub(crate) fn header_str(h: &http::HeaderMap, k: &str) -> String {
    h.get(k)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// The request as sent upstream: origin-form with `Host` for HTTP/1.1, absolute
/// with the original `:authority` for HTTP/2. Either way the authority the app
/// asked for is preserved; the connection itself goes where the pool dials.
pub(crate) fn upstream_request(
    parts: &http::request::Parts,
    body: Body,
    proto: Protocol,
    authority: &str,
    path: &str,
) -> Option<Request<Body>> {
    let uri = if proto == Protocol::Http2 {
        format!("http://{authority}{path}")
    } else {
        path.to_string()
    };
    let uri = uri.parse::<http::Uri>().ok()?;
    let mut up = Request::from_parts(parts.clone(), body);
    *up.uri_mut() = uri;
    if proto == Protocol::Http2 {
        *up.version_mut() = Version::HTTP_2;
        up.headers_mut().remove(header::HOST);
    } else {
        *up.version_mut() = Version::HTTP_11;
    }
    Some(up)
}

pub(crate) fn empty() -> Body {
    http_body_util::Empty::new().map_err(|n| match n {}).boxed()
}

/// Joins two upgraded connections (WebSocket, CONNECT) byte for byte.
pub(crate) async fn tunnel(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (Ok(d), Ok(u)) = (down.await, up.await) else {
        return;
    };
    let mut d = hyper_util::rt::TokioIo::new(d);
    let mut u = hyper_util::rt::TokioIo::new(u);
    let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
}

/// Makes sure the request carries `Host` (from the URI authority, as HTTP/2
/// requests carry it) and returns it: the authority the app asked for, which
/// is preserved upstream whatever address the connection goes to.
pub(crate) fn ensure_host(parts: &mut http::request::Parts) -> Option<String> {
    if !parts.headers.contains_key(header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, v);
        }
    }
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_but_te_trailers_stays() {
        let mut h = http::HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static(" Trailers "));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[header::TE], "trailers");

        let mut h = http::HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }
}
