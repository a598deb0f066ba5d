//! The sampling decision, as Envoy makes it: an upstream decision carried in
//! the trace context wins; otherwise `x-client-trace-id` or
//! `x-envoy-force-trace` force a trace; otherwise a random roll against the
//! configured percentage.

use http::HeaderMap;

/// Whether the request forces a trace.
pub fn forced(h: &HeaderMap) -> bool {
    h.contains_key("x-client-trace-id") || h.contains_key("x-envoy-force-trace")
}

/// `roll` is uniform in [0, 100).
pub fn decide(upstream: Option<bool>, forced: bool, percent: f64, roll: f64) -> bool {
    match upstream {
        Some(d) => d,
        None => forced || roll < percent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_then_force_then_percentage() {
        assert!(!decide(Some(false), true, 100.0, 0.0));
        assert!(decide(Some(true), false, 0.0, 99.0));
        assert!(decide(None, true, 0.0, 99.0));
        assert!(!decide(None, false, 0.0, 0.0));
        assert!(decide(None, false, 100.0, 99.999));
        assert!(decide(None, false, 50.0, 49.9));
        assert!(!decide(None, false, 50.0, 50.0));
        let mut h = HeaderMap::new();
        assert!(!forced(&h));
        h.insert("x-client-trace-id", "abc".parse().unwrap());
        assert!(forced(&h));
    }
}
