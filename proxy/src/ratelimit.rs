//! Local rate limiting of inbound HTTP requests: Envoy's token bucket (a fill of
//! `tokens_per_fill` every `fill_interval`, at most `max_tokens` banked), one
//! bucket for the workload and/or one per port, configured with
//! `--local-rate-limit` / `MESH_LOCAL_RATE_LIMIT` (the pod annotation
//! `ratelimit.mesh.io/local`; syntax in [`mesh_api::ratelimit`]). Requests
//! over the limit get 429 `local_rate_limited`, `x-local-rate-limit: true`,
//! response flag `RL`. Authorization runs first, so denied requests spend no token.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_api::ratelimit::Bucket as BucketSpec;

/// One token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    per_fill: u64,
    interval: Duration,
    max: u64,
    /// (tokens, time of the last fill).
    state: Mutex<(u64, Instant)>,
}

impl TokenBucket {
    pub fn new(spec: &BucketSpec, now: Instant) -> TokenBucket {
        TokenBucket {
            per_fill: spec.tokens_per_fill.into(),
            interval: spec.fill_interval,
            max: spec.max_tokens.into(),
            state: Mutex::new((spec.max_tokens.into(), now)),
        }
    }

    /// Takes a token if there is one, refilling first for the intervals elapsed.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.1);
        let fills = (elapsed.as_nanos() / self.interval.as_nanos().max(1)) as u64;
        if fills > 0 {
            s.0 =
                s.0.saturating_add(fills.saturating_mul(self.per_fill))
                    .min(self.max);
            s.1 += self.interval * fills.min(u32::MAX as u64) as u32;
        }
        if s.0 > 0 {
            s.0 -= 1;
            true
        } else {
            false
        }
    }
}

/// The buckets of one proxy.
#[derive(Debug, Default)]
pub struct RateLimits {
    workload: Option<TokenBucket>,
    ports: Vec<(u16, TokenBucket)>,
}

impl RateLimits {
    pub fn new(specs: &[BucketSpec]) -> RateLimits {
        let now = Instant::now();
        RateLimits {
            workload: specs
                .iter()
                .find(|b| b.port.is_none())
                .map(|b| TokenBucket::new(b, now)),
            ports: specs
                .iter()
                .filter_map(|b| Some((b.port?, TokenBucket::new(b, now))))
                .collect(),
        }
    }

    /// Whether a request to `port` may pass (the port's bucket, then the workload's).
    pub fn admit(&self, port: u16) -> bool {
        let now = Instant::now();
        let port_ok = self
            .ports
            .iter()
            .find(|(p, _)| *p == port)
            .is_none_or(|(_, b)| b.try_take(now));
        port_ok && self.workload.as_ref().is_none_or(|b| b.try_take(now))
    }

    pub fn is_empty(&self) -> bool {
        self.workload.is_none() && self.ports.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_refills_by_whole_intervals() {
        let spec = &mesh_api::ratelimit::parse("2/s,burst=3").unwrap()[0];
        let t0 = Instant::now();
        let b = TokenBucket::new(spec, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(999)));
        assert!(b.try_take(t0 + Duration::from_secs(1)));
        assert!(b.try_take(t0 + Duration::from_secs(1)));
        assert!(!b.try_take(t0 + Duration::from_secs(1)));
        // Long idle: capped at burst.
        let later = t0 + Duration::from_secs(100);
        assert!((0..3).all(|_| b.try_take(later)));
        assert!(!b.try_take(later));
    }

    #[test]
    fn port_bucket_only_for_its_port() {
        let r = RateLimits::new(&mesh_api::ratelimit::parse("1/h,port=9080").unwrap());
        assert!(r.admit(9080));
        assert!(!r.admit(9080));
        assert!(r.admit(8080));
        assert!(RateLimits::new(&[]).is_empty());
    }
}
