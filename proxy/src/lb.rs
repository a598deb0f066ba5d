//! Endpoint selection with Istio's DestinationRule load-balancer policies:
//! `LEAST_REQUEST` (the default; power of two random choices on in-flight
//! requests), `ROUND_ROBIN`, `RANDOM`, and `consistentHash` on a header, a cookie
//! or the source IP (rendezvous hashing, so adding or removing an endpoint only
//! moves the keys that belonged to it).

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use mesh_api::networking::{DestinationRuleSpec, LoadBalancerSettings};

/// What a consistent hash is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(String),
    Cookie(String),
    SourceIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    LeastRequest,
    RoundRobin,
    Random,
    ConsistentHash(HashKey),
}

impl LbPolicy {
    /// The policy a DestinationRule sets for `port` (port-level settings win over
    /// the top level), or the default.
    pub fn from_rule(rule: Option<&DestinationRuleSpec>, port: u16) -> LbPolicy {
        let Some(tp) = rule.and_then(|r| r.traffic_policy.as_ref()) else {
            return LbPolicy::LeastRequest;
        };
        let port_level = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
            .and_then(|p| p.load_balancer.as_ref());
        port_level
            .or(tp.load_balancer.as_ref())
            .map(LbPolicy::from_settings)
            .unwrap_or(LbPolicy::LeastRequest)
    }

    pub fn from_settings(s: &LoadBalancerSettings) -> LbPolicy {
        if let Some(ch) = &s.consistent_hash {
            if let Some(h) = ch.get("httpHeaderName").and_then(|v| v.as_str()) {
                return LbPolicy::ConsistentHash(HashKey::Header(h.to_ascii_lowercase()));
            }
            if let Some(c) = ch
                .get("httpCookie")
                .and_then(|c| c.get("name"))
                .and_then(|v| v.as_str())
            {
                return LbPolicy::ConsistentHash(HashKey::Cookie(c.to_string()));
            }
            if ch.get("useSourceIp").and_then(|v| v.as_bool()) == Some(true) {
                return LbPolicy::ConsistentHash(HashKey::SourceIp);
            }
        }
        match s.simple.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
            Some("RANDOM") => LbPolicy::Random,
            _ => LbPolicy::LeastRequest,
        }
    }
}

/// Inputs a hash policy may read from the request.
#[derive(Default)]
pub struct RequestKeys<'a> {
    pub headers: Option<&'a http::HeaderMap>,
    pub source_ip: Option<IpAddr>,
}

/// An endpoint as the balancer sees it: an address and its requests in flight.
pub trait Candidate {
    fn addr(&self) -> SocketAddr;
    fn in_flight(&self) -> usize;
}

/// Picks an endpoint; `None` when there is none. `rr` is the cluster's
/// round-robin cursor.
pub fn pick<'e, C: Candidate>(
    endpoints: &'e [C],
    policy: &LbPolicy,
    rr: &AtomicUsize,
    keys: &RequestKeys<'_>,
) -> Option<&'e C> {
    match endpoints.len() {
        0 => return None,
        1 => return endpoints.first(),
        _ => {}
    }
    let n = endpoints.len();
    match policy {
        LbPolicy::RoundRobin => Some(&endpoints[rr.fetch_add(1, Ordering::Relaxed) % n]),
        LbPolicy::Random => Some(&endpoints[fastrand::usize(..n)]),
        LbPolicy::LeastRequest => {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            if eb.in_flight() < ea.in_flight() {
                Some(eb)
            } else {
                Some(ea)
            }
        }
        LbPolicy::ConsistentHash(key) => {
            let value: Option<String> = match key {
                HashKey::Header(h) => keys
                    .headers
                    .and_then(|m| m.get(h.as_str()))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                HashKey::Cookie(name) => keys.headers.and_then(|m| cookie(m, name)),
                HashKey::SourceIp => keys.source_ip.map(|ip| ip.to_string()),
            };
            match value {
                // Without the key Envoy falls back to a random choice.
                None => Some(&endpoints[fastrand::usize(..n)]),
                Some(v) => endpoints.iter().max_by_key(|e| {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    v.hash(&mut h);
                    e.addr().hash(&mut h);
                    h.finish()
                }),
            }
        }
    }
}

fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Ep {
        addr: SocketAddr,
        active: usize,
    }

    impl Candidate for Ep {
        fn addr(&self) -> SocketAddr {
            self.addr
        }
        fn in_flight(&self) -> usize {
            self.active
        }
    }

    fn eps(n: usize) -> Vec<Ep> {
        (0..n)
            .map(|i| Ep {
                addr: format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                active: 0,
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles() {
        let e = eps(3);
        let rr = AtomicUsize::new(0);
        let picks: Vec<_> = (0..6)
            .map(|_| {
                pick(&e, &LbPolicy::RoundRobin, &rr, &RequestKeys::default())
                    .unwrap()
                    .addr
            })
            .collect();
        assert_eq!(picks[0], picks[3]);
        assert_ne!(picks[0], picks[1]);
    }

    #[test]
    fn least_request_avoids_busy_endpoint() {
        let mut e = eps(2);
        e[0].active = 100;
        let rr = AtomicUsize::new(0);
        for _ in 0..50 {
            let p = pick(&e, &LbPolicy::LeastRequest, &rr, &RequestKeys::default()).unwrap();
            assert_eq!(p.addr, e[1].addr);
        }
    }

    #[test]
    fn consistent_hash_is_sticky_and_stable() {
        let e = eps(5);
        let rr = AtomicUsize::new(0);
        let pol = LbPolicy::ConsistentHash(HashKey::Header("x-user".into()));
        let mut h = http::HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        let keys = RequestKeys {
            headers: Some(&h),
            source_ip: None,
        };
        let first = pick(&e, &pol, &rr, &keys).unwrap().addr;
        for _ in 0..20 {
            assert_eq!(pick(&e, &pol, &rr, &keys).unwrap().addr, first);
        }
        // Removing another endpoint does not move alice.
        let fewer: Vec<_> = e
            .iter()
            .filter(|x| x.addr == first || x.addr != e[0].addr)
            .cloned()
            .collect();
        assert_eq!(pick(&fewer, &pol, &rr, &keys).unwrap().addr, first);
    }

    #[test]
    fn policy_from_settings() {
        let s: LoadBalancerSettings = serde_json::from_value(
            serde_json::json!({"consistentHash": {"httpCookie": {"name": "user", "ttl": "0s"}}}),
        )
        .unwrap();
        assert_eq!(
            LbPolicy::from_settings(&s),
            LbPolicy::ConsistentHash(HashKey::Cookie("user".into()))
        );
        let s: LoadBalancerSettings =
            serde_json::from_value(serde_json::json!({"simple": "ROUND_ROBIN"})).unwrap();
        assert_eq!(LbPolicy::from_settings(&s), LbPolicy::RoundRobin);
        assert_eq!(LbPolicy::from_rule(None, 80), LbPolicy::LeastRequest);
    }
}
