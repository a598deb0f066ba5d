//! Local (per-proxy) rate limiting: Envoy's token bucket, configured without an
//! EnvoyFilter. The pod annotation [`ANNOTATION`] (the injector passes it to the
//! proxy as [`ENV`]) holds one or more buckets separated by `;`:
//!
//! ```text
//! 100/s                     100 requests per second for the whole workload
//! 10/500ms,burst=20         10 tokens every 500 ms, at most 20 banked
//! 50/s;5/s,port=9080        workload-wide 50/s, and port 9080 at most 5/s
//! ```
//!
//! `N/INTERVAL` is Envoy's `tokens_per_fill`/`fill_interval` (interval `s`, `m`,
//! `h` or a duration such as `250ms`, `2s`; at least 50 ms as in Envoy), `burst`
//! its `max_tokens` (default N), `port` restricts a bucket to one inbound port.
//! A request over the limit gets 429 `local_rate_limited` with
//! `x-local-rate-limit: true` and response flag `RL`.

use std::time::Duration;

use crate::annotations::AnnotationError;

/// Pod annotation holding the buckets.
pub const ANNOTATION: &str = "ratelimit.mesh.io/local";
/// Environment variable (and `mesh-proxy --local-rate-limit`) carrying the same value.
pub const ENV: &str = "MESH_LOCAL_RATE_LIMIT";

/// One token bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// `None`: every inbound request of the workload.
    pub port: Option<u16>,
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
    pub max_tokens: u32,
}

fn bad(value: &str, reason: impl Into<String>) -> AnnotationError {
    AnnotationError {
        key: ANNOTATION.to_string(),
        value: value.to_string(),
        check: "localRateLimit",
        reason: reason.into(),
    }
}

/// A bucket's interval: a mesh duration ([`crate::values::duration`]), where a
/// bare unit means one of it (`/s`, `/m`); it must be positive.
fn interval(v: &str) -> Option<Duration> {
    let d = if v.starts_with(|c: char| c.is_ascii_alphabetic()) {
        crate::values::duration(&format!("1{v}"))
    } else {
        crate::values::duration(v)
    };
    d.ok().filter(|d| !d.is_zero())
}

/// Parses the annotation value; empty means no limit.
pub fn parse(value: &str) -> Result<Vec<Bucket>, AnnotationError> {
    let mut out: Vec<Bucket> = Vec::new();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let mut items = entry.split(',').map(str::trim);
        let rate = items.next().unwrap_or_default();
        let (n, per) = rate
            .split_once('/')
            .ok_or_else(|| bad(value, format!("{rate:?} is not N/INTERVAL (e.g. 100/s)")))?;
        let tokens: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(value, format!("{n:?} is not a positive token count")))?;
        let fill = interval(per.trim()).ok_or_else(|| {
            bad(
                value,
                format!("{per:?} is not an interval (s, m, h, 250ms)"),
            )
        })?;
        if fill < Duration::from_millis(50) {
            return Err(bad(value, format!("interval {per:?} is below 50ms")));
        }
        let mut b = Bucket {
            port: None,
            tokens_per_fill: tokens,
            fill_interval: fill,
            max_tokens: tokens,
        };
        for item in items {
            match item.split_once('=') {
                Some(("burst", v)) => {
                    b.max_tokens = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        bad(value, format!("burst {v:?} is not a positive number"))
                    })?
                }
                Some(("port", v)) => {
                    b.port = Some(
                        crate::annotations::parse_port(ANNOTATION, v, "localRateLimit")
                            .map_err(|e| bad(value, e.reason))?,
                    )
                }
                _ => {
                    return Err(bad(
                        value,
                        format!("unknown option {item:?} (burst=N, port=P)"),
                    ))
                }
            }
        }
        if out.iter().any(|o| o.port == b.port) {
            return Err(bad(value, "two buckets for the same scope"));
        }
        out.push(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("").unwrap(), vec![]);
        let b = parse("100/s").unwrap();
        assert_eq!(b[0].tokens_per_fill, 100);
        assert_eq!(b[0].fill_interval, Duration::from_secs(1));
        assert_eq!(b[0].max_tokens, 100);
        let b = parse("10/500ms,burst=20; 5/m,port=9080").unwrap();
        assert_eq!(b[0].fill_interval, Duration::from_millis(500));
        assert_eq!(b[0].max_tokens, 20);
        assert_eq!(b[1].port, Some(9080));
        assert_eq!(b[1].fill_interval, Duration::from_secs(60));
    }

    #[test]
    fn errors_name_the_value() {
        for v in [
            "100",
            "x/s",
            "0/s",
            "5/10ms",
            "5/s,burst=0",
            "5/s,color=red",
            "5/s;6/s",
            "5/s,port=0",
            // Found by fuzzing (api/tests/fuzz.rs): panicked instead.
            "1/99999999999999999999h",
        ] {
            let e = parse(v).unwrap_err().to_string();
            assert!(e.contains(ANNOTATION) && e.contains(v), "{v}: {e}");
        }
    }
}
