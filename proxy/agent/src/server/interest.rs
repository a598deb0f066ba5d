//! Which sync streams a new snapshot concerns. Every stream waits on its own
//! [`Notify`]; one fan-out task follows the snapshot channel and pokes them.
//! A snapshot that changed only endpoints ([`SnapshotChange::endpoints_only`])
//! pokes only the streams whose view can hold a changed host: the proxies of
//! the namespaces the host reaches, those that looked it up on demand, and
//! those whose view is not namespace-scoped (gateways, a Sidecar, mesh-wide
//! visibility). Anything else pokes every stream. In a mesh of thousands of
//! proxies an endpoint change concerns a few dozen; waking all of them for
//! each change was most of the agent's CPU.

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
}

#[derive(Default)]
struct Index {
    subs: HashMap<u64, Sub>,
    by_namespace: HashMap<String, HashSet<u64>>,
    by_host: HashMap<String, HashSet<u64>>,
    always: HashSet<u64>,
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
                me.poke(snap.change.as_deref());
            }
        });
    }

    /// Adds stream `id` of a proxy in `namespace`; it is poked once at once
    /// (its first view).
    pub fn register(&self, id: u64, namespace: &str) -> Arc<Notify> {
        let poke = Arc::new(Notify::new());
        poke.notify_one();
        self.with(|ix| {
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

    /// Pokes the streams `change` concerns (every stream without one).
    /// Returns how many were poked.
    pub fn poke(&self, change: Option<&SnapshotChange>) -> usize {
        self.with(|ix| {
            let targets = change
                .filter(|c| c.endpoints_only)
                .and_then(|c| targets(ix, c));
            match targets {
                Some(ids) => {
                    for id in &ids {
                        if let Some(s) = ix.subs.get(id) {
                            s.poke.notify_one();
                        }
                    }
                    ids.len()
                }
                None => {
                    for s in ix.subs.values() {
                        s.poke.notify_one();
                    }
                    ix.subs.len()
                }
            }
        })
    }
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
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn change(hosts: &[(&str, Reach)], endpoints_only: bool) -> SnapshotChange {
        SnapshotChange {
            prev_version: 1,
            hosts: hosts
                .iter()
                .map(|(h, r)| (h.to_string(), r.clone()))
                .collect::<BTreeMap<_, _>>(),
            endpoints_only,
        }
    }

    fn ns(n: &[&str]) -> Reach {
        Reach::Namespaces(n.iter().map(|s| s.to_string()).collect())
    }

    /// Drains a stream's pending poke: whether it had one.
    fn poked(n: &Notify) -> bool {
        let f = n.notified();
        tokio::pin!(f);
        // A stored permit completes the first poll.
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        f.as_mut().poll(&mut cx).is_ready()
    }

    use std::future::Future;

    #[test]
    fn an_endpoint_change_pokes_only_the_streams_whose_view_can_hold_it() {
        let i = Interest::default();
        let a = i.register(1, "shop");
        let b = i.register(2, "bank");
        let c = i.register(3, "bank");
        let g = i.register(4, "istio-system");
        for s in [&a, &b, &c, &g] {
            assert!(poked(s), "registering pokes for the first view");
        }
        i.update(
            3,
            false,
            &BTreeSet::from(["api.shop.svc.cluster.local".to_string()]),
        );
        i.update(4, true, &BTreeSet::new());

        let api = "api.shop.svc.cluster.local";
        assert_eq!(i.poke(Some(&change(&[(api, ns(&["shop"]))], true))), 3);
        assert_eq!(
            [&a, &b, &c, &g].map(|s| poked(s)),
            [true, false, true, true],
            "shop's proxy, the proxy that looked it up, the gateway"
        );

        // Not endpoints only, a root-namespace host, no change at all: everyone.
        for ch in [
            Some(change(&[(api, ns(&["shop"]))], false)),
            Some(change(
                &[("x.istio-system.svc.cluster.local", Reach::All)],
                true,
            )),
            None,
        ] {
            assert_eq!(i.poke(ch.as_ref()), 4);
            assert!([&a, &b, &c, &g].iter().all(|s| poked(s)));
        }

        // Forgotten and gone: no longer poked for it.
        i.update(3, false, &BTreeSet::new());
        i.unregister(1);
        assert_eq!(i.poke(Some(&change(&[(api, ns(&["shop"]))], true))), 1);
        assert_eq!([&b, &c, &g].map(|s| poked(s)), [false, false, true]);
    }
}
