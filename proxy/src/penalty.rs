//! The penalty box: a peer address whose connection was closed for abuse (an
//! HTTP/2 premature-reset or control-frame flood, or a GOAWAY h2 sent for a
//! protocol violation such as a CONTINUATION flood) has its next connections
//! refused at accept for a while — 1 s after the first strike, doubling with
//! each further strike up to 30 s, forgotten after 5 quiet minutes.
//!
//! Why: the per-connection budgets ([`crate::downstream`]) close a flooding
//! connection, but an attacker reconnects at once and floods again; every new
//! connection gets a fresh budget, so the sidecar stayed busy with it and the
//! other clients' latency suffered (measured ×6 of baseline during a SETTINGS
//! flood). Refusing at accept costs one `accept` and one close.
//!
//! Keyed by source IP, so clients behind the same NAT share a penalty: that is
//! the known cost, and why the penalty is short, capped, and forgotten. The
//! pod's own addresses (its app's outbound connections, loopback) are never
//! penalized: they are the workload itself, not a remote peer, and cutting it
//! off would take every one of its calls down for one bad client.
//!
//! The decisions are the plain [`Table`]; [`PenaltyBox`] is its shared shell.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::downstream::{should_log, Reason, REFUSAL_LOG_INTERVAL};

/// How long penalties last and how many peers are remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The penalty after the first strike; doubled per further strike.
    pub first: Duration,
    /// The longest penalty.
    pub max: Duration,
    /// A peer not struck for this long after its penalty ended starts over.
    pub forget_after: Duration,
    /// Peers remembered at most (the least recently struck one goes first),
    /// so a flood from many addresses cannot grow the table without bound.
    pub max_peers: usize,
}

impl Policy {
    pub const DEFAULT: Policy = Policy {
        first: Duration::from_secs(1),
        max: Duration::from_secs(30),
        forget_after: Duration::from_secs(300),
        max_peers: 4096,
    };

    /// The penalty of the `strikes`-th strike (1-based): first × 2^(strikes-1), capped.
    pub fn penalty(&self, strikes: u32) -> Duration {
        let doublings = strikes.saturating_sub(1).min(31);
        self.first
            .checked_mul(1 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// Whether an abuse reason earns a penalty (idle and timeouts do not: they
/// are what a slow or forgetful client does too).
pub fn penalizes(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::ResetFlood | Reason::ControlFlood | Reason::ProtocolError
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    strikes: u32,
    until: Instant,
    reason: Reason,
}

/// The pure penalty state: who is penalized until when, and why.
#[derive(Debug)]
pub struct Table {
    policy: Policy,
    peers: HashMap<IpAddr, Entry>,
}

impl Table {
    pub fn new(policy: Policy) -> Table {
        Table {
            policy,
            peers: HashMap::new(),
        }
    }

    /// Records a strike against `ip` at `now`; returns the penalty it earned.
    pub fn strike(&mut self, ip: IpAddr, reason: Reason, now: Instant) -> Duration {
        let p = self.policy;
        let strikes = match self.peers.get(&ip) {
            Some(e) if now < e.until + p.forget_after => e.strikes.saturating_add(1),
            _ => 1,
        };
        if !self.peers.contains_key(&ip) && self.peers.len() >= p.max_peers {
            // Forget the peer whose penalty ended first (the least recent one).
            if let Some(old) = self
                .peers
                .iter()
                .min_by_key(|(_, e)| e.until)
                .map(|(k, _)| *k)
            {
                self.peers.remove(&old);
            }
        }
        let penalty = p.penalty(strikes);
        self.peers.insert(
            ip,
            Entry {
                strikes,
                until: now + penalty,
                reason,
            },
        );
        penalty
    }

    /// Why a connection from `ip` at `now` is refused, if it is.
    pub fn refuses(&mut self, ip: IpAddr, now: Instant) -> Option<Reason> {
        let p = self.policy;
        let e = *self.peers.get(&ip)?;
        if now < e.until {
            return Some(e.reason);
        }
        if now >= e.until + p.forget_after {
            self.peers.remove(&ip);
        }
        None
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// Whether `ip` may ever be penalized: never the pod itself (its own address
/// or loopback).
pub fn exempt(ip: IpAddr, own: Option<IpAddr>) -> bool {
    Some(ip) == own || ip.is_loopback() || ip.is_unspecified()
}

/// The proxy's one penalty box, shared by every downstream listener (an
/// attacker is one address whichever port it floods).
#[derive(Debug)]
pub struct PenaltyBox {
    /// The pod's own address (`--instance-ip`), never penalized.
    own: Option<IpAddr>,
    table: Mutex<Table>,
    last_log: Mutex<Option<Instant>>,
}

impl PenaltyBox {
    pub fn new(own: Option<IpAddr>, policy: Policy) -> PenaltyBox {
        PenaltyBox {
            own,
            table: Mutex::new(Table::new(policy)),
            last_log: Mutex::new(None),
        }
    }

    /// A connection of `ip` was closed for `reason`: penalize the address if
    /// the reason is abuse.
    pub fn closed(&self, ip: IpAddr, reason: Reason) {
        if !penalizes(reason) || exempt(ip, self.own) {
            return;
        }
        let penalty = self
            .table
            .lock()
            .expect("penalty lock")
            .strike(ip, reason, Instant::now());
        tracing::info!(peer = %ip, ?reason, ?penalty, "downstream peer penalized: new connections refused");
    }

    /// Why a connection just accepted from `ip` is refused, if it is (the
    /// caller drops it and counts the reason). Logged at most once per
    /// [`REFUSAL_LOG_INTERVAL`].
    pub fn refuses(&self, ip: IpAddr) -> Option<Reason> {
        if exempt(ip, self.own) {
            return None;
        }
        let now = Instant::now();
        let reason = self.table.lock().expect("penalty lock").refuses(ip, now)?;
        let mut last = self.last_log.lock().expect("penalty log lock");
        if should_log(*last, now, REFUSAL_LOG_INTERVAL) {
            *last = Some(now);
            tracing::warn!(peer = %ip, ?reason, "connection from a penalized peer refused (logged once per 10s)");
        }
        Some(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn penalty_doubles_and_is_capped() {
        let p = Policy::DEFAULT;
        let secs: Vec<u64> = (1..=8).map(|s| p.penalty(s).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(p.penalty(u32::MAX), p.max);
        assert_eq!(p.penalty(0), p.first);
    }

    #[tokio::test(start_paused = true)]
    async fn struck_peer_is_refused_until_its_penalty_ends() {
        let mut t = Table::new(Policy::DEFAULT);
        let t0 = Instant::now();
        assert_eq!(t.refuses(A, t0), None, "unknown peer admitted");
        assert_eq!(
            t.strike(A, Reason::ControlFlood, t0),
            Duration::from_secs(1)
        );
        assert_eq!(t.refuses(A, t0), Some(Reason::ControlFlood));
        assert_eq!(t.refuses(B, t0), None, "another peer is not affected");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(t.refuses(A, Instant::now()), Some(Reason::ControlFlood));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            t.refuses(A, Instant::now()),
            None,
            "admitted again after 1 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn repeat_strikes_escalate_and_quiet_forgets() {
        let p = Policy::DEFAULT;
        let mut t = Table::new(p);
        // An attacker flooding again as soon as it is admitted.
        let mut got = Vec::new();
        for _ in 0..7 {
            let d = t.strike(A, Reason::ResetFlood, Instant::now());
            got.push(d.as_secs());
            tokio::time::advance(d).await;
            assert_eq!(t.refuses(A, Instant::now()), None);
        }
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        // Quiet for less than forget_after: the next strike still escalates.
        tokio::time::advance(p.forget_after - Duration::from_secs(1)).await;
        assert_eq!(t.strike(A, Reason::ResetFlood, Instant::now()), p.max);
        // Quiet for forget_after after the penalty ended: forgotten entirely.
        tokio::time::advance(p.max + p.forget_after).await;
        assert_eq!(t.refuses(A, Instant::now()), None);
        assert!(t.is_empty(), "forgotten peers are dropped");
        assert_eq!(t.strike(A, Reason::ResetFlood, Instant::now()), p.first);
    }

    #[tokio::test(start_paused = true)]
    async fn table_is_bounded_and_drops_the_oldest() {
        let mut t = Table::new(Policy {
            max_peers: 3,
            ..Policy::DEFAULT
        });
        let ip = |i: u8| IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, i));
        for i in 1..=3 {
            t.strike(ip(i), Reason::ControlFlood, Instant::now());
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        t.strike(ip(4), Reason::ControlFlood, Instant::now());
        assert_eq!(t.len(), 3);
        let now = Instant::now();
        assert_eq!(t.refuses(ip(1), now), None, "the oldest was dropped");
        for i in 2..=4 {
            assert!(t.refuses(ip(i), now).is_some(), "peer {i} kept");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn box_exempts_the_pod_itself_and_ignores_timeouts() {
        let own = B;
        let b = PenaltyBox::new(Some(own), Policy::DEFAULT);
        for ip in [own, "127.0.0.6".parse().unwrap(), "::1".parse().unwrap()] {
            b.closed(ip, Reason::ControlFlood);
            assert_eq!(b.refuses(ip), None, "{ip} is the pod itself: never refused");
        }
        // Timeouts are not abuse.
        b.closed(A, Reason::Idle);
        b.closed(A, Reason::FirstByte);
        b.closed(A, Reason::GraceOver);
        assert_eq!(b.refuses(A), None);
        b.closed(A, Reason::ResetFlood);
        assert_eq!(b.refuses(A), Some(Reason::ResetFlood));
        tokio::time::advance(Policy::DEFAULT.first).await;
        assert_eq!(b.refuses(A), None);
    }
}
