//! Trace context on the wire: read from B3 (multi-header `x-b3-*` and single
//! `b3`) or W3C `traceparent`/`tracestate`, and written back as B3 multi-header
//! plus `traceparent` (and `b3` when the request used it). A malformed header is
//! ignored (the request starts a new trace), never an error.

use http::header::{HeaderMap, HeaderValue};

/// The context a request carries: the caller's span and its decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// 128-bit trace id (a 64-bit B3 id has `trace_hi == 0`).
    pub trace_hi: u64,
    pub trace_lo: u64,
    /// The caller's span: the parent of the span this proxy starts.
    pub span_id: u64,
    /// The upstream sampling decision, if one was made.
    pub sampled: Option<bool>,
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn hex64(s: &str) -> Option<u64> {
    (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// A 64- or 128-bit hex trace id; all-zero is invalid.
fn trace_id(s: &str) -> Option<(u64, u64)> {
    let id = match s.len() {
        16 => (0, hex64(s)?),
        32 => (hex64(&s[..16])?, hex64(&s[16..])?),
        _ => return None,
    };
    (id != (0, 0)).then_some(id)
}

fn b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The sampling decision alone, when a request carries one without a full
/// context (`x-b3-sampled: 0`, `b3: 0`).
pub fn decision_only(h: &HeaderMap) -> Option<bool> {
    if get(h, "x-b3-flags") == Some("1") {
        return Some(true);
    }
    get(h, "x-b3-sampled")
        .and_then(b3_sampled)
        .or_else(|| get(h, "b3").filter(|v| v.len() == 1).and_then(b3_sampled))
}

/// The context of `h`: B3 multi-header first, then `b3`, then `traceparent`.
pub fn extract(h: &HeaderMap) -> Option<Context> {
    b3_multi(h)
        .or_else(|| b3_single(h))
        .or_else(|| traceparent(h))
}

fn b3_multi(h: &HeaderMap) -> Option<Context> {
    let (trace_hi, trace_lo) = trace_id(get(h, "x-b3-traceid")?)?;
    let span_id = hex64(get(h, "x-b3-spanid")?).filter(|s| *s != 0)?;
    Some(Context {
        trace_hi,
        trace_lo,
        span_id,
        sampled: decision_only(h),
    })
}

fn b3_single(h: &HeaderMap) -> Option<Context> {
    let v = get(h, "b3")?;
    let mut it = v.split('-');
    let (trace_hi, trace_lo) = trace_id(it.next()?)?;
    let span_id = hex64(it.next()?).filter(|s| *s != 0)?;
    let sampled = match it.next() {
        None => None,
        Some(s) => Some(b3_sampled(s)?),
    };
    Some(Context {
        trace_hi,
        trace_lo,
        span_id,
        sampled,
    })
}

fn traceparent(h: &HeaderMap) -> Option<Context> {
    let v = get(h, "traceparent")?;
    let parts: Vec<&str> = v.split('-').collect();
    // Version 00 has exactly four fields; later versions may append more.
    let [version, trace, span, flags, ..] = parts.as_slice() else {
        return None;
    };
    if version.len() != 2 || *version == "ff" || (*version == "00" && parts.len() != 4) {
        return None;
    }
    if trace.len() != 32 || flags.len() != 2 {
        return None;
    }
    let (trace_hi, trace_lo) = trace_id(trace)?;
    let span_id = hex64(span).filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Context {
        trace_hi,
        trace_lo,
        span_id,
        sampled: Some(flags & 1 == 1),
    })
}

fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("hex is a valid header value")
}

/// Writes the context the next hop sees: `span` (this proxy's span) as its
/// parent, `parent` (if any) as B3's parent span id.
pub fn inject(h: &mut HeaderMap, trace: (u64, u64), span: u64, parent: Option<u64>, sampled: bool) {
    let (hi, lo) = trace;
    let s = if sampled { "1" } else { "0" };
    h.insert("x-b3-traceid", value(format!("{hi:016x}{lo:016x}")));
    h.insert("x-b3-spanid", value(format!("{span:016x}")));
    match parent {
        Some(p) => h.insert("x-b3-parentspanid", value(format!("{p:016x}"))),
        None => h.remove("x-b3-parentspanid"),
    };
    h.insert("x-b3-sampled", HeaderValue::from_static(s));
    h.remove("x-b3-flags");
    if h.contains_key("b3") {
        h.insert("b3", value(format!("{hi:016x}{lo:016x}-{span:016x}-{s}")));
    }
    h.insert(
        "traceparent",
        value(format!("00-{hi:016x}{lo:016x}-{span:016x}-0{s}")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_each_format() {
        let b3 = extract(&hm(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]))
        .unwrap();
        assert_eq!(
            (b3.trace_hi, b3.trace_lo, b3.span_id, b3.sampled),
            (
                0x463ac35c9f6413ad,
                0x48485a3953bb6124,
                0xa2fb4a1d1a96d312,
                Some(true)
            )
        );
        let short = extract(&hm(&[
            ("x-b3-traceid", "48485a3953bb6124"),
            ("x-b3-spanid", "0000000000000001"),
        ]))
        .unwrap();
        assert_eq!(
            (short.trace_hi, short.trace_lo, short.sampled),
            (0, 0x48485a3953bb6124, None)
        );
        let single = extract(&hm(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90",
        )]))
        .unwrap();
        assert_eq!(
            (single.span_id, single.sampled),
            (0xe457b5a2e4d86bd1, Some(false))
        );
        let w3c = extract(&hm(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )]))
        .unwrap();
        assert_eq!(
            (w3c.trace_lo, w3c.span_id, w3c.sampled),
            (0x8448eb211c80319c, 0xb7ad6b7169203331, Some(true))
        );
        assert_eq!(decision_only(&hm(&[("b3", "0")])), Some(false));
        assert_eq!(decision_only(&hm(&[("x-b3-flags", "1")])), Some(true));
    }

    #[test]
    fn bad_headers_are_ignored() {
        for h in [
            hm(&[("x-b3-traceid", "xyz"), ("x-b3-spanid", "a2fb4a1d1a96d312")]),
            hm(&[
                ("x-b3-traceid", "00000000000000000000000000000000"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ]),
            hm(&[
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("x-b3-spanid", "0000000000000000"),
            ]),
            hm(&[("x-b3-traceid", "463ac35c9f6413ad")]),
            hm(&[("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-maybe")]),
            hm(&[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            )]),
            hm(&[(
                "traceparent",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )]),
            hm(&[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            )]),
            hm(&[("traceparent", "00-0af7651916cd43dd-b7ad6b7169203331-01")]),
        ] {
            assert_eq!(extract(&h), None, "{h:?}");
        }
        assert_eq!(decision_only(&hm(&[("x-b3-sampled", "yes")])), None);
    }

    #[test]
    fn injects_b3_and_traceparent_that_read_back() {
        let mut h = hm(&[("b3", "1"), ("x-b3-flags", "1")]);
        inject(&mut h, (1, 2), 3, Some(4), true);
        assert_eq!(h["x-b3-traceid"], "00000000000000010000000000000002");
        assert_eq!(h["x-b3-parentspanid"], "0000000000000004");
        assert_eq!(
            h["traceparent"],
            "00-00000000000000010000000000000002-0000000000000003-01"
        );
        assert_eq!(
            h["b3"],
            "00000000000000010000000000000002-0000000000000003-1"
        );
        assert!(!h.contains_key("x-b3-flags"));
        let back = extract(&h).unwrap();
        assert_eq!(
            (back.trace_hi, back.trace_lo, back.span_id, back.sampled),
            (1, 2, 3, Some(true))
        );
        inject(&mut h, (1, 2), 5, None, false);
        assert!(!h.contains_key("x-b3-parentspanid"));
        assert_eq!(
            h["traceparent"],
            "00-00000000000000010000000000000002-0000000000000005-00"
        );
    }
}
