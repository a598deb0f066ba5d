//! [`Interest`]: which streams a snapshot pokes, and which changes each
//! poked stream is left to patch its view with.

use super::*;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;

fn change(prev_version: u64, hosts: &[(&str, Reach)], endpoints_only: bool) -> SnapshotChange {
    SnapshotChange {
        prev_version,
        hosts: hosts
            .iter()
            .map(|(h, r)| (h.to_string(), r.clone()))
            .collect::<BTreeMap<_, _>>(),
        endpoints_only,
    }
}

/// Snapshot `version` made by `changes` (the last is its own), as the
/// pipeline remembers them.
fn snap(version: u64, changes: Vec<SnapshotChange>) -> Snapshot {
    let changes: VecDeque<Arc<SnapshotChange>> = changes.into_iter().map(Arc::new).collect();
    Snapshot {
        version,
        change: changes.back().cloned(),
        recent_changes: Arc::new(changes.into_iter().filter(|c| c.endpoints_only).collect()),
        ..Default::default()
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

fn hosts(p: &Pending, version: u64) -> Option<Vec<&str>> {
    p.hosts_since(version)
}

const API: &str = "api.shop.svc.cluster.local";

#[test]
fn an_endpoint_change_pokes_only_the_streams_whose_view_can_hold_it() {
    let i = Interest::default();
    i.poke_for(&snap(1, vec![]));
    let a = i.register(1, "shop");
    let b = i.register(2, "bank");
    let c = i.register(3, "bank");
    let g = i.register(4, "istio-system");
    for s in [&a, &b, &c, &g] {
        assert!(poked(s), "registering pokes for the first view");
    }
    i.update(3, false, &BTreeSet::from([API.to_string()]));
    i.update(4, true, &BTreeSet::new());

    assert_eq!(
        i.poke_for(&snap(2, vec![change(1, &[(API, ns(&["shop"]))], true)])),
        3
    );
    assert_eq!(
        [&a, &b, &c, &g].map(|s| poked(s)),
        [true, false, true, true],
        "shop's proxy, the proxy that looked it up, the gateway"
    );

    // Not endpoints only, a root-namespace host, no change at all: everyone.
    for (v, s) in [
        (3, snap(3, vec![change(2, &[(API, ns(&["shop"]))], false)])),
        (
            4,
            snap(
                4,
                vec![change(
                    3,
                    &[("x.istio-system.svc.cluster.local", Reach::All)],
                    true,
                )],
            ),
        ),
        (5, snap(5, vec![])),
    ] {
        assert_eq!(s.version, v);
        assert_eq!(i.poke_for(&s), 4);
        assert!([&a, &b, &c, &g].iter().all(|s| poked(s)));
    }

    // Forgotten and gone: no longer poked for it.
    i.update(3, false, &BTreeSet::new());
    i.unregister(1);
    assert_eq!(
        i.poke_for(&snap(6, vec![change(5, &[(API, ns(&["shop"]))], true)])),
        1
    );
    assert_eq!([&b, &c, &g].map(|s| poked(s)), [false, false, true]);
}

#[test]
fn a_poked_stream_gets_the_hosts_of_its_changes_only() {
    let i = Interest::default();
    i.poke_for(&snap(1, vec![]));
    let _a = i.register(1, "shop");
    // Its first view is of version 1; then two changes of its namespace and
    // one of another.
    let shop = |prev, host: &'static str| change(prev, &[(host, ns(&["shop"]))], true);
    let c2 = shop(1, API);
    let c3 = change(2, &[("db.bank.svc.cluster.local", ns(&["bank"]))], true);
    let c4 = shop(3, "web.shop.svc.cluster.local");
    i.poke_for(&snap(2, vec![c2.clone()]));
    i.poke_for(&snap(3, vec![c2.clone(), c3.clone()]));
    i.poke_for(&snap(4, vec![c2, c3, c4]));
    let p = i.take(1);
    assert_eq!(
        hosts(&p, 1),
        Some(vec!["web.shop.svc.cluster.local", API]),
        "newest first, nothing of bank's"
    );
    assert_eq!(i.take(1).hosts_since(4), Some(vec![]), "taken");
}

#[test]
fn changes_published_faster_than_poked_are_all_left_with_their_streams() {
    let i = Interest::default();
    i.poke_for(&snap(1, vec![]));
    let _a = i.register(1, "shop");
    let _b = i.register(2, "bank");
    let c2 = change(1, &[(API, ns(&["shop"]))], true);
    let c3 = change(2, &[("db.bank.svc.cluster.local", ns(&["bank"]))], true);
    // Version 2 was never seen by the fan-out: 3 remembers it.
    assert_eq!(i.poke_for(&snap(3, vec![c2, c3])), 2);
    assert_eq!(i.take(1).hosts_since(1), Some(vec![API]));
    assert_eq!(
        i.take(2).hosts_since(1),
        Some(vec!["db.bank.svc.cluster.local"])
    );
    // Not remembered back to the last poke (a structure change in between):
    // nothing known, everyone poked, each stream falls back on its snapshot.
    let c5 = change(4, &[(API, ns(&["shop"]))], true);
    assert_eq!(i.poke_for(&snap(5, vec![c5])), 2);
    assert_eq!(i.take(1).hosts_since(3), None);
    assert_eq!(i.take(1).hosts_since(5), Some(vec![]));
}

#[test]
fn a_stream_whose_interest_changed_does_not_trust_earlier_routing() {
    let i = Interest::default();
    i.poke_for(&snap(1, vec![]));
    let _a = i.register(1, "shop");
    i.poke_for(&snap(
        2,
        vec![change(
            1,
            &[("db.bank.svc.cluster.local", ns(&["bank"]))],
            true,
        )],
    ));
    // It looked db up at version 1; its interest is known from version 2 on.
    i.update(
        1,
        false,
        &BTreeSet::from(["db.bank.svc.cluster.local".to_string()]),
    );
    assert_eq!(
        i.take(1).hosts_since(1),
        None,
        "version 2 went by without it"
    );
    assert_eq!(i.take(1).hosts_since(2), Some(vec![]));
    // Too many changes while it did not wake up: forgotten.
    let mut prev = 2;
    for v in 3..(3 + MAX_PENDING as u64 + 1) {
        i.poke_for(&snap(v, vec![change(prev, &[(API, ns(&["shop"]))], true)]));
        prev = v;
    }
    let p = i.take(1);
    assert!(p.changes.len() < MAX_PENDING);
    assert_eq!(p.hosts_since(2), None);
    assert_eq!(p.hosts_since(prev).map(|h| h.len()), Some(p.changes.len()));
}
