//! On-demand discovery, ageing out: a host the agent added to a proxy's view
//! because the proxy looked it up stays there only while the proxy uses it.
//! The outbound paths mark a host used ([`Usage::touch`]) on every connection
//! and request that resolves to it (an open connection holds it in use until it
//! closes); a periodic sweep ([`Usage::sweep`]) takes out hosts idle for
//! longer than [`IdlePolicy::ttl`] and the sync client tells the agent to
//! forget them (`ClientMessage::Forget`), so a sidecar's view follows its
//! traffic, not its history. A new connection to a forgotten host looks it up
//! again.
//!
//! Only hosts added on demand are tracked: [`Usage::touch`] on any other host
//! (namespace scope, Sidecar egress) does nothing. Marking use is lock-free (an
//! atomic load of the host table and two atomic stores); the table itself
//! changes only when a lookup finds a host or a sweep drops some.
//!
//! Pure but for the clock, which is passed in (the client passes tokio's, so
//! tests pause it); [`idle`], the decision, is a plain function.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Istio-like default: a host unused for ten minutes leaves the view.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);
/// Default time between two sweeps.
pub const DEFAULT_SWEEP: Duration = Duration::from_secs(30);

/// When on-demand hosts age out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    /// A host unused for this long (and with no open connection) goes.
    pub ttl: Duration,
    /// How often idle hosts are looked for.
    pub sweep: Duration,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            ttl: DEFAULT_IDLE,
            sweep: DEFAULT_SWEEP,
        }
    }
}

impl IdlePolicy {
    /// The time between sweeps actually used: at most half the TTL, so a host
    /// never outlives its TTL by more than half of it (a short TTL with the
    /// default sweep still ages out on time).
    pub fn interval(&self) -> Duration {
        self.sweep.min(self.ttl / 2).max(Duration::from_millis(10))
    }
}

/// One tracked host: when it was last used (milliseconds since the table's
/// epoch) and how many connections hold it now.
#[derive(Debug, Default)]
struct Use {
    last_ms: AtomicU64,
    open: AtomicU32,
}

/// The hosts to drop: those with no open connection whose last use is at
/// least `ttl` before `now` (all times in milliseconds since one epoch).
/// Sorted, so the message to the agent is deterministic.
pub fn idle<'a>(
    hosts: impl IntoIterator<Item = (&'a str, u64, u32)>,
    now_ms: u64,
    ttl: Duration,
) -> Vec<String> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let mut gone: Vec<String> = hosts
        .into_iter()
        .filter(|(_, last, open)| *open == 0 && now_ms.saturating_sub(*last) >= ttl_ms)
        .map(|(h, _, _)| h.to_string())
        .collect();
    gone.sort();
    gone
}

/// Last use of every on-demand host of one proxy, shared by the outbound paths
/// (which mark use) and the sync client (which adds found hosts and sweeps).
#[derive(Debug)]
pub struct Usage {
    clock: Clock,
    hosts: ArcSwap<HashMap<String, Arc<Use>>>,
}

/// What time it is, and since when times are counted.
#[derive(Debug, Clone, Copy)]
struct Clock {
    now: fn() -> Instant,
    epoch: Instant,
}

impl Clock {
    fn ms(&self) -> u64 {
        let since = (self.now)().saturating_duration_since(self.epoch);
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}

impl Usage {
    /// An empty table reading the time from `now`.
    pub fn new(now: fn() -> Instant) -> Self {
        Usage {
            clock: Clock { now, epoch: now() },
            hosts: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// A lookup found `host`: track it, used now (an entry already there
    /// keeps its open connections).
    pub fn add(&self, host: &str) {
        let ms = self.clock.ms();
        if let Some(u) = self.hosts.load().get(host) {
            u.last_ms.fetch_max(ms, Ordering::Relaxed);
            return;
        }
        self.hosts.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(host.to_string()).or_insert_with(|| {
                Arc::new(Use {
                    last_ms: AtomicU64::new(ms),
                    open: AtomicU32::new(0),
                })
            });
            m
        });
    }

    /// A connection or request uses `host` now. For an on-demand host, a
    /// guard that keeps it in use until dropped (an open connection is never
    /// idle); for any other host, `None` and no cost beyond a map lookup.
    pub fn touch(&self, host: &str) -> Option<InUse> {
        let u = self.hosts.load().get(host)?.clone();
        u.last_ms.fetch_max(self.clock.ms(), Ordering::Relaxed);
        u.open.fetch_add(1, Ordering::Relaxed);
        Some(InUse {
            used: u,
            clock: self.clock,
        })
    }

    /// Drops the hosts idle for `ttl` now and returns them (sorted). A host
    /// touched between the check and the removal may go anyway: the
    /// connection that touched it keeps its upstream, and the next one looks
    /// the host up again.
    pub fn sweep(&self, ttl: Duration) -> Vec<String> {
        let now_ms = self.clock.ms();
        let snapshot = |m: &HashMap<String, Arc<Use>>| {
            let rows: Vec<(&str, u64, u32)> = m
                .iter()
                .map(|(h, u)| {
                    (
                        h.as_str(),
                        u.last_ms.load(Ordering::Relaxed),
                        u.open.load(Ordering::Relaxed),
                    )
                })
                .collect();
            idle(rows, now_ms, ttl)
        };
        let gone = snapshot(&self.hosts.load());
        if gone.is_empty() {
            return gone;
        }
        self.hosts.rcu(|m| {
            let mut m = HashMap::clone(m);
            for h in &gone {
                m.remove(h);
            }
            m
        });
        gone
    }

    /// The hosts tracked now (sorted).
    pub fn hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hosts.load().keys().cloned().collect();
        v.sort();
        v
    }
}

/// An open use of an on-demand host (see [`Usage::touch`]): while it lives the
/// host is not idle; dropping it counts as a last use.
#[derive(Debug)]
pub struct InUse {
    used: Arc<Use>,
    clock: Clock,
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.used
            .last_ms
            .fetch_max(self.clock.ms(), Ordering::Relaxed);
        self.used.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn idle_is_unused_for_the_ttl_with_no_open_connection() {
        let ttl = Duration::from_secs(600);
        let rows = [
            ("old.a", 0, 0),          // unused for 11 minutes: goes
            ("exactly.a", MIN, 0),    // unused for exactly the TTL: goes
            ("recent.a", 5 * MIN, 0), // used 6 minutes ago: stays
            ("open.a", 0, 1),         // old, but a connection holds it: stays
        ];
        assert_eq!(
            idle(rows, 11 * MIN, ttl),
            vec!["exactly.a".to_string(), "old.a".to_string()]
        );
        // A clock that went backwards (last use "after" now) is not idle.
        assert!(idle([("x", 20 * MIN, 0)], MIN, ttl).is_empty());
    }

    #[test]
    fn the_sweep_runs_at_most_every_half_ttl() {
        assert_eq!(IdlePolicy::default().interval(), DEFAULT_SWEEP);
        let short = IdlePolicy {
            ttl: Duration::from_secs(2),
            sweep: DEFAULT_SWEEP,
        };
        assert_eq!(short.interval(), Duration::from_secs(1));
    }

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_age_out_unless_used_or_held_open() {
        let ttl = Duration::from_secs(600);
        let u = Usage::new(now);
        u.add("a.svc");
        u.add("b.svc");
        u.add("c.svc");
        // Not on demand: not tracked, no guard.
        assert!(u.touch("static.svc").is_none());
        let held = u.touch("c.svc").expect("an on-demand host");
        tokio::time::advance(Duration::from_secs(300)).await;
        drop(u.touch("b.svc")); // a short request at 5 minutes
        assert!(u.sweep(ttl).is_empty());
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(u.sweep(ttl), vec!["a.svc".to_string()]);
        assert_eq!(u.hosts(), vec!["b.svc".to_string(), "c.svc".to_string()]);
        tokio::time::advance(Duration::from_secs(300)).await;
        // b: idle 10 minutes now; c: its connection is still open.
        assert_eq!(u.sweep(ttl), vec!["b.svc".to_string()]);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(u.sweep(ttl).is_empty(), "an open connection keeps its host");
        drop(held); // the connection closes: that is its last use
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(u.sweep(ttl).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(u.sweep(ttl), vec!["c.svc".to_string()]);
        assert!(u.hosts().is_empty());
        // Gone: touching it does nothing; found again, it is tracked again.
        assert!(u.touch("a.svc").is_none());
        u.add("a.svc");
        assert!(u.touch("a.svc").is_some());
    }
}
