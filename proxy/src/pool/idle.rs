//! The own HTTP/1.1 client's idle connections, per pool key. Nobody polls an
//! idle connection (hyper's idle connections each have a task that notices
//! the server's close), so a sweep every few seconds drops those the server
//! closed: otherwise a socket in CLOSE_WAIT would stay open until its
//! endpoint's next request, or for ever once the endpoint is gone.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::h1client::Conn;

/// Idle connections kept per key (by either client); more are closed when
/// checked in.
pub(super) const MAX_PER_KEY: usize = 64;

/// How often idle connections are checked for a close.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Hashes a key per request (check-out and check-in) without SipHash.
pub(super) type Fast = foldhash::fast::RandomState;

pub(crate) struct Idle<K> {
    conns: Mutex<HashMap<K, Vec<Conn>, Fast>>,
    sweeping: AtomicBool,
}

impl<K: Hash + Eq + Send + 'static> Idle<K> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Idle {
            conns: Mutex::new(HashMap::default()),
            sweeping: AtomicBool::new(false),
        })
    }

    /// The most recently checked-in connection for `key` that is still
    /// usable; the dead ones met on the way are dropped.
    pub(crate) fn checkout(&self, key: &K) -> Option<Conn> {
        loop {
            let mut c = self.conns.lock().expect("idle lock").get_mut(key)?.pop()?;
            if c.is_usable() {
                return Some(c);
            }
        }
    }

    /// Keeps `conn` for the next request to `key`. The first check-in starts
    /// the sweep (it needs the runtime, which a check-in always runs on).
    pub(crate) fn checkin(self: &Arc<Self>, key: K, conn: Conn) {
        {
            let mut m = self.conns.lock().expect("idle lock");
            let list = m.entry(key).or_default();
            if list.len() < MAX_PER_KEY {
                list.push(conn);
            }
        }
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(idle) = weak.upgrade() else { return };
                    idle.sweep();
                }
            });
        }
    }

    /// Drops every idle connection the server closed (or wrote to unasked),
    /// and keys left without connections. Returns how many were dropped.
    pub(crate) fn sweep(&self) -> usize {
        let mut m = self.conns.lock().expect("idle lock");
        let mut dropped = 0;
        m.retain(|_, list| {
            let before = list.len();
            list.retain_mut(Conn::is_usable);
            dropped += before - list.len();
            !list.is_empty()
        });
        dropped
    }
}

#[cfg(test)]
impl<K: Hash + Eq + Send + 'static> Idle<K> {
    /// Idle connections held for `key`.
    pub(crate) fn count(&self, key: &K) -> usize {
        self.conns
            .lock()
            .expect("idle lock")
            .get(key)
            .map_or(0, Vec::len)
    }

    /// Whether the connection `checkout` would try first is usable, leaving
    /// it where it is.
    pub(crate) fn peek_usable(&self, key: &K) -> Option<bool> {
        let mut m = self.conns.lock().expect("idle lock");
        m.get_mut(key)?.last_mut().map(Conn::is_usable)
    }
}
