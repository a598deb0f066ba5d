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

/// Hop-by-hop headers (RFC 9110 7.6.1, plus `keep-alive` and
/// `proxy-connection`), as parsed names: removing by `&str` parses, validates
/// and hashes the name on every call, seven times per message per proxy. A
/// static, not a const: a const array is built (and dropped) at each use.
pub(crate) static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers (and those `Connection` names), keeping
/// `te: trailers`, and `Connection`/`Upgrade` of an upgrade being relayed.
pub(crate) fn strip_hop_by_hop(h: &mut http::HeaderMap, keep_upgrade: bool) {
    // Almost no request or response carries one: a pass over the names
    // (standard names compare as an enum) is cheaper than seven removals,
    // which were a tenth of the sidecar's instructions per request.
    if !h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
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
    for name in &HOP_BY_HOP {
        if keep_upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
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

/// `x-request-id`, parsed once (a name outside `http`'s standard set is
/// otherwise copied into a new allocation on every insert).
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A random (version 4) UUID for `x-request-id`, written in place: one
/// allocation, the header value's own.
pub(crate) fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    // 128 random bits, then the version (4) and variant (10) bits set.
    let bits = (u128::from(a) << 64 | u128::from(b)) & !(0xf000u128 << 64) & !(0xc000u128 << 48)
        | 0x4000u128 << 64
        | 0x8000u128 << 48;
    // Two hex digits per byte, the dashes before bytes 4, 6, 8 and 10
    // (8-4-4-4-12 digits).
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, b) in bits.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(b >> 4)];
        out[o + 1] = HEX[usize::from(b & 0xf)];
        o += 2;
    }
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
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
        if resembles(n, "contentlength") || resembles(n, "transferencoding") {
            return Some("header name resembles a message framing header\n");
        }
    }
    None
}

/// Whether `name` with everything but letters and digits left out is `word`
/// (lower case: header names are).
fn resembles(name: &str, word: &str) -> bool {
    name.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .eq(word.bytes())
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
    parts: http::request::Parts,
    body: Body,
    proto: Protocol,
    authority: &str,
) -> Option<Request<Body>> {
    let path = parts.uri.path_and_query();
    let uri = if proto == Protocol::Http2 {
        let path = path.map_or("/", |p| p.as_str());
        format!("http://{authority}{path}")
            .parse::<http::Uri>()
            .ok()?
    } else if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
        // Already origin-form (what HTTP/1.1 clients send): shared, not copied.
        parts.uri.clone()
    } else {
        match path {
            Some(p) => http::Uri::from(p.clone()),
            None => http::Uri::from_static("/"),
        }
    };
    let mut up = Request::from_parts(parts, body);
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
    fn request_ids_are_version_4_uuids() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        for v in [a, b] {
            let v = v.to_str().unwrap();
            assert_eq!(v.len(), 36, "{v}");
            let groups: Vec<&str> = v.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lens, [8, 4, 4, 4, 12], "{v}");
            assert!(groups
                .concat()
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(groups[2].starts_with('4'), "version: {v}");
            assert!(
                matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
                "variant: {v}"
            );
        }
    }

    #[test]
    fn framing_lookalikes_are_refused() {
        let with = |name: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(name, HeaderValue::from_static("5"));
            framing_hazard(&h)
        };
        assert!(with("content-length").is_none());
        assert!(with("content_length").is_some());
        assert!(with("transfer--encoding").is_some());
        assert!(with("content-lengths").is_none());
        assert!(with("x-content-length").is_none());
    }

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

    #[test]
    fn each_hop_by_hop_header_alone_is_seen_and_others_are_kept() {
        // The early return must know every name: each one alone goes.
        for name in [
            "connection",
            "Keep-Alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = http::HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("reviews:9080"));
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
            assert!(h.contains_key(header::HOST), "{name}");
        }
        // None of them: nothing changes.
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("reviews:9080"));
        h.append("x-b3-sampled", HeaderValue::from_static("1"));
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
        // An upgrade being relayed keeps Connection and Upgrade only.
        let mut h = http::HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::UPGRADE], "websocket");
    }
}
