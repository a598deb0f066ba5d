//! Which sync streams a new snapshot concerns. Every stream waits on its own
//! [`Notify`]; one fan-out task follows the snapshot channel and pokes them.
//! A snapshot that changed only endpoints ([`SnapshotChange::endpoints_only`])
//! pokes only the streams whose view can hold a changed host: the proxies of
//! the namespaces the host reaches, those that looked it up on demand, and
//! those whose view is not namespace-scoped (gateways, a Sidecar, mesh-wide
//! visibility). Anything else pokes every stream. In a mesh of thousands of
//! proxies an endpoint change concerns a few dozen; waking all of them for
//! each change was most of the agent's CPU.
//!
//! Each poke also leaves the change with the stream ([`Pending`]), so a woken
//! stream patches its view with the hosts of the changes that concern it,
//! not with every host changed since its version (a stream of a quiet
//! namespace would otherwise look up the hosts of hundreds of changes of
//! other namespaces in its view at each push).

use crate::compile::change::{Reach, SnapshotChange};
use crate::compile::Snapshot;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// One subscribed stream.
struct Sub {
    poke: Arc<Notify>,
    namespace: String,
    /// Its view is not namespace-scoped: poked for every change.
    always: bool,
    /// Hosts it looked up on demand.
    requested: BTreeSet<String>,
    pending: Pending,
}

/// The endpoints-only changes a stream was poked for since it last looked.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// Oldest first. Every endpoints-only change of a snapshot newer than
    /// `complete_after` that can concern the stream's view is here (and
    /// maybe others).
    pub changes: Vec<Arc<SnapshotChange>>,
    /// Changes up to this version may be missing: they were routed before
    /// the stream's interest was known (it subscribed, looked a host up, got
    /// a Sidecar), or were too many to keep. A stream whose view is older
    /// finds what changed since from the snapshot instead.
    pub complete_after: u64,
}

impl Pending {
    /// Nothing known: the stream finds what changed from the snapshot.
    pub fn unknown() -> Pending {
        Pending {
            changes: Vec::new(),
            complete_after: u64::MAX,
        }
    }

    /// The hosts that can differ in a view of `version`, when this says
    /// (newest change first; a host changed twice is listed twice).
    pub fn hosts_since(&self, version: u64) -> Option<Vec<&str>> {
        (version >= self.complete_after).then(|| {
            self.changes
                .iter()
                .rev()
                .flat_map(|c| c.hosts.keys().map(String::as_str))
                .collect()
        })
    }

    fn add(&mut self, change: &Arc<SnapshotChange>, version: u64) {
        if self.changes.len() >= MAX_PENDING {
            self.forget(version);
        } else {
            self.changes.push(change.clone());
        }
    }

    /// Changes up to `version` are not known any more.
    fn forget(&mut self, version: u64) {
        self.changes.clear();
        self.complete_after = self.complete_after.max(version);
    }
}

/// Changes kept for a stream that has not woken up to take them.
const MAX_PENDING: usize = crate::compile::RECENT_CHANGES;

#[derive(Default)]
struct Index {
    subs: HashMap<u64, Sub>,
    by_namespace: HashMap<String, HashSet<u64>>,
    by_host: HashMap<String, HashSet<u64>>,
    always: HashSet<u64>,
    /// The version of the last snapshot the streams were poked for.
    seen: u64,
}

/// The streams and what their views can hold.
#[derive(Default)]
pub struct Interest {
    index: Mutex<Index>,
    fan_out: OnceLock<()>,
}

impl Interest {
    fn with<R>(&self, f: impl FnOnce(&mut Index) -> R) -> R {
        f(&mut self.index.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Starts the task that pokes streams when a snapshot is published (once
    /// per agent, whichever listener asks first).
    pub fn start(
        self: &Arc<Self>,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) {
        if self.fan_out.set(()).is_err() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = snapshots.changed() => if r.is_err() { return },
                }
                let snap = snapshots.borrow_and_update().clone();
                me.poke_for(&snap);
            }
        });
    }

    /// Adds stream `id` of a proxy in `namespace`; it is poked once at once
    /// (its first view).
    pub fn register(&self, id: u64, namespace: &str) -> Arc<Notify> {
        let poke = Arc::new(Notify::new());
        poke.notify_one();
        self.with(|ix| {
            let pending = Pending {
                changes: Vec::new(),
                complete_after: ix.seen,
            };
            ix.by_namespace
                .entry(namespace.to_string())
                .or_default()
                .insert(id);
            ix.subs.insert(
                id,
                Sub {
                    poke: poke.clone(),
                    namespace: namespace.to_string(),
                    always: false,
                    requested: BTreeSet::new(),
                    pending,
                },
            );
        });
        poke
    }

    /// What stream `id`'s view can hold now: whether it is namespace-scoped
    /// (`!always`) and the hosts it looked up.
    pub fn update(&self, id: u64, always: bool, requested: &BTreeSet<String>) {
        self.with(|ix| {
            let Some(sub) = ix.subs.get_mut(&id) else {
                return;
            };
            if sub.always != always || sub.requested != *requested {
                // Changes routed so far went by what the view held before.
                sub.pending.forget(ix.seen);
            }
            if sub.always != always {
                sub.always = always;
                if always {
                    ix.always.insert(id);
                } else {
                    ix.always.remove(&id);
                }
            }
            if sub.requested == *requested {
                return;
            }
            let old = std::mem::replace(&mut sub.requested, requested.clone());
            for h in old.difference(requested) {
                if let Some(s) = ix.by_host.get_mut(h) {
                    s.remove(&id);
                    if s.is_empty() {
                        ix.by_host.remove(h);
                    }
                }
            }
            for h in requested.difference(&old) {
                ix.by_host.entry(h.clone()).or_default().insert(id);
            }
        });
    }

    pub fn unregister(&self, id: u64) {
        self.with(|ix| {
            let Some(sub) = ix.subs.remove(&id) else {
                return;
            };
            if let Some(s) = ix.by_namespace.get_mut(&sub.namespace) {
                s.remove(&id);
                if s.is_empty() {
                    ix.by_namespace.remove(&sub.namespace);
                }
            }
            for h in &sub.requested {
                if let Some(s) = ix.by_host.get_mut(h) {
                    s.remove(&id);
                    if s.is_empty() {
                        ix.by_host.remove(h);
                    }
                }
            }
            ix.always.remove(&id);
        });
    }

    /// What stream `id` was poked for since it last asked.
    pub fn take(&self, id: u64) -> Pending {
        self.with(|ix| {
            let Some(sub) = ix.subs.get_mut(&id) else {
                return Pending::unknown();
            };
            Pending {
                changes: std::mem::take(&mut sub.pending.changes),
                complete_after: sub.pending.complete_after,
            }
        })
    }

    /// Pokes the streams `snap` concerns: those of each endpoints-only
    /// change since the snapshot poked for before (a fast publisher may
    /// have published several since), every stream otherwise. Returns how
    /// many were poked.
    pub fn poke_for(&self, snap: &Snapshot) -> usize {
        self.with(|ix| {
            let changes = changes_since(snap, ix.seen);
            ix.seen = snap.version;
            let mut poked = HashSet::new();
            for c in changes.iter().flatten() {
                match targets(ix, c) {
                    Some(ids) => {
                        for id in ids {
                            if let Some(s) = ix.subs.get_mut(&id) {
                                s.pending.add(c, snap.version);
                                poked.insert(id);
                            }
                        }
                    }
                    None => {
                        for (id, s) in ix.subs.iter_mut() {
                            s.pending.add(c, snap.version);
                            poked.insert(*id);
                        }
                    }
                }
            }
            if changes.is_none() {
                for (id, s) in ix.subs.iter_mut() {
                    s.pending.forget(snap.version);
                    poked.insert(*id);
                }
            }
            for id in &poked {
                if let Some(s) = ix.subs.get(id) {
                    s.poke.notify_one();
                }
            }
            poked.len()
        })
    }
}

/// The endpoints-only changes from snapshot `seen` to `snap`, oldest first;
/// `None` when something else changed or they are not all remembered.
fn changes_since(snap: &Snapshot, seen: u64) -> Option<Vec<Arc<SnapshotChange>>> {
    let last = snap.change.as_ref().filter(|c| c.endpoints_only)?;
    if last.prev_version == seen {
        return Some(vec![last.clone()]);
    }
    let mut out = Vec::new();
    for c in snap.recent_changes.iter().rev() {
        out.push(c.clone());
        if c.prev_version <= seen {
            out.reverse();
            return (c.prev_version == seen).then_some(out);
        }
    }
    None
}

/// The streams an endpoints-only change can concern; `None`: all of them (a
/// root-namespace service reaches every namespace).
fn targets(ix: &Index, change: &SnapshotChange) -> Option<HashSet<u64>> {
    let mut out: HashSet<u64> = ix.always.clone();
    for (host, reach) in &change.hosts {
        match reach {
            Reach::All => return None,
            Reach::Namespaces(ns) => {
                for n in ns {
                    out.extend(ix.by_namespace.get(n).into_iter().flatten());
                }
            }
        }
        out.extend(ix.by_host.get(host).into_iter().flatten());
    }
    Some(out)
}

#[cfg(test)]
#[path = "interest_tests.rs"]
mod tests;
