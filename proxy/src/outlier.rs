//! Outlier detection (DestinationRule `outlierDetection`): an endpoint that
//! returns `consecutive5xxErrors` 5xx answers (or `consecutiveGatewayErrors`
//! 502/503/504, or connection failures) in a row is ejected for
//! `baseEjectionTime` × the number of times it has been ejected, as long as no
//! more than `maxEjectionPercent` of the endpoints are out. If fewer than half
//! would remain, all endpoints are used (Envoy's panic threshold).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use mesh_api::networking::{DestinationRuleSpec, OutlierDetection};
use mesh_api::values::ValueError;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl OutlierConfig {
    /// The rule's settings for `port`; `Err` when `baseEjectionTime` is not a duration.
    pub fn from_rule(
        rule: Option<&DestinationRuleSpec>,
        port: u16,
    ) -> Result<Option<OutlierConfig>, ValueError> {
        let Some(tp) = rule.and_then(|r| r.traffic_policy.as_ref()) else {
            return Ok(None);
        };
        let port_level = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
            .and_then(|p| p.outlier_detection.as_ref());
        match port_level.or(tp.outlier_detection.as_ref()) {
            Some(o) => OutlierConfig::from_settings(o),
            None => Ok(None),
        }
    }

    pub fn from_settings(o: &OutlierDetection) -> Result<Option<OutlierConfig>, ValueError> {
        let c5 = o
            .consecutive_5xx_errors
            .or(o.consecutive_errors.map(|e| e.max(0) as u32))
            .unwrap_or(5);
        let cg = o.consecutive_gateway_errors.unwrap_or(0);
        if c5 == 0 && cg == 0 {
            return Ok(None);
        }
        let base_ejection = o
            .base_ejection_time
            .as_deref()
            .map(mesh_api::values::duration)
            .transpose()?;
        Ok(Some(OutlierConfig {
            consecutive_5xx: c5,
            consecutive_gateway: cg,
            base_ejection: base_ejection.unwrap_or(Duration::from_secs(30)),
            max_ejection_percent: o
                .max_ejection_percent
                .map(|p| p.clamp(0, 100) as u32)
                .unwrap_or(10),
        }))
    }
}

/// Per-endpoint health state. It is runtime state: it lives in the runtime
/// table (the `state` module, above) and outlasts config pushes.
#[derive(Debug)]
pub struct EndpointHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Times ejected so far: the ejection time's multiplier.
    ejections: AtomicU32,
    /// When this state was created; `ejected_until` counts from it. Tokio's
    /// clock, so tests can move time (`tokio::time::pause`).
    base: Instant,
    /// Milliseconds since `base` until which the endpoint is out.
    ejected_until: AtomicU64,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            base: Instant::now(),
            ejected_until: AtomicU64::new(0),
        }
    }
}

impl EndpointHealth {
    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.base)
            .as_millis() as u64
            + 1
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > self.now_ms()
    }

    /// How many times the endpoint has been ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// An endpoint as outlier detection sees it: an address and its health.
pub trait Monitored {
    fn addr(&self) -> SocketAddr;
    fn health(&self) -> &EndpointHealth;
}

/// Records the outcome of one attempt (`status` 0 = connection failure);
/// `all` are the cluster's endpoints.
pub fn record<M: Monitored>(cfg: &OutlierConfig, all: &[M], ep: &M, status: u16) {
    let h = ep.health();
    let gateway = status == 0 || matches!(status, 502..=504);
    if status == 0 || status >= 500 {
        let n5 = h.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let ng = if gateway {
            h.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        let trip = (cfg.consecutive_5xx > 0 && n5 >= cfg.consecutive_5xx)
            || (cfg.consecutive_gateway > 0 && ng >= cfg.consecutive_gateway);
        if trip && !h.is_ejected() {
            let out = all.iter().filter(|e| e.health().is_ejected()).count();
            if (out * 100) < (all.len() * cfg.max_ejection_percent as usize).max(1) || out == 0 {
                let times = h.ejections.fetch_add(1, Ordering::Relaxed) + 1;
                let ms = cfg.base_ejection.as_millis() as u64 * u64::from(times);
                h.ejected_until.store(h.now_ms() + ms, Ordering::Relaxed);
                h.consecutive_5xx.store(0, Ordering::Relaxed);
                h.consecutive_gateway.store(0, Ordering::Relaxed);
                tracing::info!(endpoint = %ep.addr(), ejection_ms = ms, "outlier ejected");
            }
        }
    } else {
        h.consecutive_5xx.store(0, Ordering::Relaxed);
        h.consecutive_gateway.store(0, Ordering::Relaxed);
    }
}

/// The endpoints to balance over: the non-ejected ones, unless fewer than half
/// remain (panic mode: all of them).
pub fn available<M: Monitored + Clone>(all: &[M]) -> Vec<M> {
    let healthy: Vec<M> = all
        .iter()
        .filter(|e| !e.health().is_ejected())
        .cloned()
        .collect();
    if healthy.len() * 2 < all.len() {
        all.to_vec()
    } else {
        healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone)]
    struct Ep(SocketAddr, Arc<EndpointHealth>);

    impl Monitored for Ep {
        fn addr(&self) -> SocketAddr {
            self.0
        }
        fn health(&self) -> &EndpointHealth {
            &self.1
        }
    }

    fn eps(n: u8) -> Vec<Ep> {
        (1..=n)
            .map(|i| Ep(SocketAddr::from(([10, 0, 0, i], 80)), Arc::default()))
            .collect()
    }

    const CFG: OutlierConfig = OutlierConfig {
        consecutive_5xx: 3,
        consecutive_gateway: 0,
        base_ejection: Duration::from_secs(10),
        max_ejection_percent: 50,
    };

    #[tokio::test(start_paused = true)]
    async fn an_ejection_lasts_the_base_time_times_the_ejections() {
        let all = eps(2);
        for _ in 0..3 {
            record(&CFG, &all, &all[0], 503);
        }
        assert!(all[0].1.is_ejected());
        assert_eq!(available(&all).len(), 1);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(all[0].1.is_ejected());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!all[0].1.is_ejected(), "back after baseEjectionTime");
        // The second ejection lasts twice as long.
        for _ in 0..3 {
            record(&CFG, &all, &all[0], 503);
        }
        assert_eq!(all[0].1.ejections(), 2);
        tokio::time::advance(Duration::from_millis(19_999)).await;
        assert!(all[0].1.is_ejected());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!all[0].1.is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count_and_max_percent_holds() {
        let all = eps(2);
        record(&CFG, &all, &all[0], 503);
        record(&CFG, &all, &all[0], 503);
        record(&CFG, &all, &all[0], 200);
        record(&CFG, &all, &all[0], 503);
        assert!(!all[0].1.is_ejected(), "not 3 in a row");
        for _ in 0..3 {
            record(&CFG, &all, &all[0], 503);
            record(&CFG, &all, &all[1], 503);
        }
        // 50% of two endpoints: only one may be out.
        assert!(all[0].1.is_ejected() && !all[1].1.is_ejected());
    }
}
