//! On-demand discovery, the agent's half: a proxy in `shop` (namespace scope)
//! asks about destinations it does not know; the agent answers with the
//! service Istio's rules let it see, and the view built with the requested
//! hosts carries it (routes and all). `exportTo` and a Sidecar still hide what
//! Istio hides; addresses and names outside the mesh answer nothing.

mod common;

use common::store;

use mesh_agent::compile::{compile, Settings, Snapshot, Visibility};
use mesh_agent::ondemand::lookup;
use mesh_agent::view;
use mesh_api::syncapi::ProxyIdentity;
use std::collections::BTreeSet;
use std::sync::Arc;

const MESH: &str = include_str!("fixtures/mesh.yaml");
const ISTIO: &str = include_str!("fixtures/istio.yaml");
const STOCK: &str = "stock.inventory.svc.cluster.local";

fn snap(extra: &[(&str, &str)]) -> Snapshot {
    let settings = Arc::new(Settings {
        visibility: Visibility::OnDemand,
        ..Settings::default()
    });
    let mut files = vec![("mesh.yaml", MESH), ("istio.yaml", ISTIO)];
    files.extend_from_slice(extra);
    compile(&store(&files), &settings, 3)
}

fn web() -> ProxyIdentity {
    ProxyIdentity {
        pod: "web-1".into(),
        namespace: "shop".into(),
        service_account: "web".into(),
        ..Default::default()
    }
}

fn hosts(v: &mesh_api::syncapi::ProxyView) -> Vec<&str> {
    v.services.iter().map(|s| s.hostname.as_str()).collect()
}

#[test]
fn a_lookup_names_the_visible_service_and_the_view_then_carries_it() {
    let s = snap(&[]);
    let before = view::build(&s, &web());
    assert!(!hosts(&before).contains(&STOCK), "{:?}", hosts(&before));
    // By VIP, by short and qualified names, with a port.
    for target in [
        "10.96.0.20",
        "stock.inventory",
        "stock.inventory.svc",
        STOCK,
        "stock.inventory:8000",
    ] {
        assert_eq!(
            lookup(&s, &web(), target).as_deref(),
            Some(STOCK),
            "{target}"
        );
    }
    let requested = BTreeSet::from([STOCK.to_string()]);
    let after = view::build_with(&s, &web(), &requested);
    assert!(hosts(&after).contains(&STOCK), "{:?}", hosts(&after));
    // Its routes and subsets travel with it, as with any visible host.
    assert!(after.virtual_services.contains_key("inventory/stock"));
    assert_eq!(after.destination_rules[STOCK].subsets.len(), 2);
}

#[test]
fn what_istio_hides_stays_hidden_and_the_outside_answers_nothing() {
    let s = snap(&[]);
    // ledger is exported to "." (inventory only).
    assert_eq!(lookup(&s, &web(), "10.96.0.30"), None);
    assert_eq!(lookup(&s, &web(), "ledger.inventory"), None);
    let requested = BTreeSet::from(["ledger.inventory.svc.cluster.local".to_string()]);
    let v = view::build_with(&s, &web(), &requested);
    assert!(
        !hosts(&v).iter().any(|h| h.starts_with("ledger")),
        "{:?}",
        hosts(&v)
    );
    // A VirtualService exported to its own namespace does not travel with the
    // looked-up host it routes (the caller gets the service, not that route).
    let local_vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: stock-local, namespace: inventory}\nspec:\n  hosts: [stock.inventory.svc.cluster.local]\n  exportTo: [\".\"]\n  http:\n  - route:\n    - destination: {host: stock, subset: v2}\n";
    let with_local = snap(&[("local.yaml", local_vs)]);
    assert_eq!(
        lookup(&with_local, &web(), "stock.inventory").as_deref(),
        Some(STOCK)
    );
    let v = view::build_with(&with_local, &web(), &BTreeSet::from([STOCK.to_string()]));
    assert!(hosts(&v).contains(&STOCK));
    assert!(v.virtual_services.contains_key("inventory/stock"));
    assert!(
        !v.virtual_services.contains_key("inventory/stock-local"),
        "{:?}",
        v.virtual_services.keys()
    );
    // Not in the mesh at all.
    assert_eq!(lookup(&s, &web(), "203.0.113.9"), None);
    assert_eq!(lookup(&s, &web(), "example.org"), None);
    assert_eq!(lookup(&s, &web(), "nothing.inventory"), None);
    // A Sidecar's egress list is all a proxy may see: lookups find nothing more.
    let sc = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec:\n  egress:\n  - hosts: [\"./api.payments.example\"]\n";
    let s = snap(&[("sc.yaml", sc)]);
    assert_eq!(lookup(&s, &web(), "10.96.0.20"), None);
    let v = view::build_with(&s, &web(), &BTreeSet::from([STOCK.to_string()]));
    assert_eq!(hosts(&v), ["api.payments.example"]);
}

#[test]
fn a_pod_ip_names_the_service_it_backs() {
    let s = snap(&[]);
    // 10.1.0.5 is web-1, an endpoint of web.shop.
    let inv = ProxyIdentity {
        pod: "stock-1".into(),
        namespace: "inventory".into(),
        ..Default::default()
    };
    assert_eq!(
        lookup(&s, &inv, "10.1.0.5").as_deref(),
        Some("web.shop.svc.cluster.local")
    );
}

/// The agent extends a scope's shared view with a proxy's on-demand hosts
/// instead of building its view again: the result is the view `build_with`
/// makes, for every subset of the mesh's hosts (hidden, missing and already
/// visible ones included) and for proxies of both namespaces; where the
/// shortcut is not certain (a Sidecar) it declines.
#[test]
fn extending_the_shared_view_gives_the_view_built_with_the_hosts() {
    let local_vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: stock-local, namespace: inventory}\nspec:\n  hosts: [stock.inventory.svc.cluster.local]\n  exportTo: [\".\"]\n  http:\n  - route:\n    - destination: {host: stock, subset: v2}\n";
    let s = snap(&[("local.yaml", local_vs)]);
    let mut candidates: Vec<String> = s.services.keys().cloned().collect();
    candidates.push("nothing.inventory.svc.cluster.local".into());
    assert!(candidates.len() >= 4, "{candidates:?}");
    let inv = ProxyIdentity {
        pod: "stock-1".into(),
        namespace: "inventory".into(),
        ..Default::default()
    };
    let mut compared = 0;
    for id in [web(), inv] {
        let base = view::build(&s, &id);
        for mask in 1u32..(1 << candidates.len()) {
            let requested: BTreeSet<String> = candidates
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, h)| h.clone())
                .collect();
            let extended = view::extend(&s, &id, &base, &requested).expect("no Sidecar here");
            assert_eq!(
                extended,
                view::build_with(&s, &id, &requested),
                "{} asking {requested:?}",
                id.namespace
            );
            compared += 1;
        }
    }
    assert!(compared > 30);
    let sc = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec:\n  egress:\n  - hosts: [\"./*\"]\n";
    let s = snap(&[("sc.yaml", sc)]);
    let base = view::build(&s, &web());
    assert_eq!(
        view::extend(&s, &web(), &base, &BTreeSet::from([STOCK.to_string()])),
        None
    );
}
