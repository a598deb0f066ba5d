//! On-demand discovery, the agent's half: which service a proxy means when it
//! asks about a destination it does not know (a Service VIP, a pod IP, or a
//! host name from an HTTP authority), under Istio's visibility rules. A proxy
//! that gets an answer adds the host to its requested set and the agent keeps
//! it in that proxy's view ([`crate::view::build_with`]) until the proxy
//! stops using it and sends `Forget` (the stream drops it and pushes the
//! smaller view).
//!
//! Pure: a snapshot and an identity in, a host name (or nothing) out; and
//! the per-stream [`Budget`] that keeps a proxy flooding lookups from costing
//! the agent more than a bounded rate.

use crate::compile::{cross_host_matches, exported, Snapshot};
use mesh_api::syncapi::{ProxyIdentity, Service};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The host of the service `target` names for proxy `id`, if it is in the
/// mesh and visible to it: exported to its namespace, and its namespace has no
/// Sidecar (a Sidecar's egress list is the whole of what a proxy may see, as in
/// Istio, and it is in the view already). `None`: not in the mesh for this
/// proxy, the caller treats the destination as outside it.
pub fn lookup(snap: &Snapshot, id: &ProxyIdentity, target: &str) -> Option<String> {
    if id.router || !snap.settings.serves(&id.namespace) || crate::view::has_sidecar(snap, id) {
        return None;
    }
    let visible = snap
        .services
        .values()
        .filter(|s| exported(&s.export_to, &s.namespace, &id.namespace));
    let found: Option<&Service> = match target.parse::<IpAddr>() {
        Ok(ip) => {
            let ip = ip.to_string();
            let mut candidates: Vec<&Service> = visible
                .filter(|s| {
                    s.addresses.contains(&ip) || s.endpoints.iter().any(|e| e.address == ip)
                })
                .map(|s| &**s)
                .collect();
            // A VIP names one service; a pod IP may back several: the first
            // by host name, so every proxy asking gets the same answer.
            candidates.sort_by_key(|s| (!s.addresses.contains(&ip), s.hostname.clone()));
            candidates.first().copied()
        }
        Err(_) => {
            let host = target
                .split(':')
                .next()
                .unwrap_or(target)
                .to_ascii_lowercase();
            let fqdn = expand(&host, &id.namespace, &snap.settings.domain_suffix);
            // The exact host, visible: the answer without a scan.
            if let Some(s) = snap
                .services
                .get(&fqdn)
                .filter(|s| exported(&s.export_to, &s.namespace, &id.namespace))
            {
                return Some(s.hostname.clone());
            }
            visible
                .map(|s| &**s)
                .filter(|s| cross_host_matches(&s.hostname, &fqdn) || s.hostname == fqdn)
                .min_by_key(|s| (s.hostname != fqdn, s.hostname.clone()))
        }
    };
    found.map(|s| s.hostname.clone())
}

/// A short Kubernetes name as the proxy's resolver would expand it: `name` in
/// the proxy's namespace, `name.ns` and `name.ns.svc` in the cluster domain.
fn expand(host: &str, ns: &str, domain: &str) -> String {
    match host.matches('.').count() {
        0 => format!("{host}.{ns}.svc.{domain}"),
        1 => format!("{host}.svc.{domain}"),
        _ if host.ends_with(".svc") => format!("{host}.{domain}"),
        _ => host.to_string(),
    }
}

/// Hosts one proxy may have added on demand (a bound on what a stream holds).
pub const MAX_REQUESTED: usize = 10_000;

/// Lookups one stream may make: a burst, then a steady rate. Beyond it the
/// answer is refused without looking (the proxy treats the destination as it
/// would one outside the mesh and asks again later).
#[derive(Debug, Clone)]
pub struct Budget {
    tokens: f64,
    last: Instant,
}

impl Budget {
    /// Lookups a stream may make at once (a pod's first requests fan out).
    pub const BURST: f64 = 100.0;
    /// Lookups per second after that.
    pub const RATE: f64 = 20.0;

    pub fn new(now: Instant) -> Self {
        Budget {
            tokens: Self::BURST,
            last: now,
        }
    }

    /// Takes one lookup at `now`; false when the budget is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * Self::RATE;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next lookup is allowed (for the refusal message).
    pub fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / Self::RATE).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        assert_eq!((0..200).filter(|_| b.take(t0)).count(), 100);
        assert!(!b.take(t0));
        assert!(b.wait() > Duration::ZERO);
        // One second later: twenty more, not more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 20);
        // A long pause refills to the burst, never beyond.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..500).filter(|_| b.take(t2)).count(), 100);
    }
}
