//! Joining the state table across pushes: kept state for what still exists,
//! dropped for what is gone, binds from older snapshots, changed pool limits.

use super::*;
use mesh_api::syncapi::{Endpoint as VEp, ProxyView, Service, ServicePort};

const HOST: &str = "echo.default.svc.cluster.local";
const CLUSTER: &str = "outbound|8080||echo.default.svc.cluster.local";
const OTHER: &str = "outbound|9090||other.default.svc.cluster.local";

fn service(host: &str, port: u16, ips: &[&str]) -> Service {
    Service {
        hostname: host.into(),
        namespace: "default".into(),
        ports: vec![ServicePort {
            name: "http".into(),
            port,
            target_port: Some(port),
            protocol: "HTTP".into(),
        }],
        endpoints: ips
            .iter()
            .map(|ip| VEp {
                address: ip.to_string(),
                ready: true,
                labels: [("version".to_string(), "v1".to_string())].into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The echo service on `ips`, the other service, and a rule for echo.
fn snap(version: u64, ips: &[&str], rule: &str) -> Snapshot {
    let mut view = ProxyView {
        version,
        services: vec![
            service(HOST, 8080, ips).into(),
            service("other.default.svc.cluster.local", 9090, &["10.0.0.9"]).into(),
        ],
        ..Default::default()
    };
    view.destination_rules
        .insert(HOST.into(), serde_yaml_ng::from_str(rule).unwrap());
    Snapshot::compile(view, "default").unwrap()
}

const RULE: &str = "host: echo\ntrafficPolicy:\n  connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}\n  outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 30s}\nsubsets: [{name: v1, labels: {version: v1}}]\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_push_keeps_the_state_of_what_still_exists() {
    let s1 = snap(1, &["10.0.0.1", "10.0.0.2"], RULE);
    let t1 = join(&Table::default(), &s1);
    let c1 = s1.clusters().iter().find(|c| &*c.name == CLUSTER).unwrap();
    let bound = t1.bind(c1);
    // Eject .1, hold a request in flight on .2, move the cursor.
    let cfg = c1.outlier.clone().unwrap();
    crate::outlier::record(&cfg, &bound.members, &bound.members[0], 503);
    assert!(bound.members[0].state.health.is_ejected());
    let in_flight = bound.members[1].state.begin();
    bound.state.rr.store(5, Ordering::Relaxed);

    // A request to the subset cluster makes its endpoints' state.
    let sub = "outbound|8080|v1|echo.default.svc.cluster.local";
    assert!(t1.endpoint(sub, addr("10.0.0.1:8080")).is_none());
    let c1_sub = s1.all_clusters().find(|c| &*c.name == sub).unwrap();
    drop(t1.bind(c1_sub));

    // An unrelated change (another service's endpoints) and a new
    // endpoint in this cluster: everything that still exists is kept.
    let s2 = snap(2, &["10.0.0.1", "10.0.0.2", "10.0.0.3"], RULE);
    let t2 = join(&t1, &s2);
    let one = t2.endpoint(CLUSTER, addr("10.0.0.1:8080")).unwrap();
    assert!(Arc::ptr_eq(one, &bound.members[0].state), "same Arc");
    assert!(one.health.is_ejected(), "still ejected after the push");
    assert_eq!(one.health.ejections(), 1);
    let two = t2.endpoint(CLUSTER, addr("10.0.0.2:8080")).unwrap();
    assert_eq!(two.active(), 1);
    assert!(
        t2.endpoint(CLUSTER, addr("10.0.0.3:8080")).is_none(),
        "new: no state until a request binds the cluster"
    );
    let cs = t2.cluster(CLUSTER).unwrap();
    assert!(Arc::ptr_eq(cs, &bound.state));
    assert_eq!(cs.rr.load(Ordering::Relaxed), 5);
    // A request on the new snapshot sees the same state.
    let c2 = s2.clusters().iter().find(|c| &*c.name == CLUSTER).unwrap();
    let b2 = t2.bind(c2);
    assert_eq!(crate::outlier::available(&b2.members).len(), 2);
    let three = t2.endpoint(CLUSTER, addr("10.0.0.3:8080")).unwrap();
    assert!(Arc::ptr_eq(three, &b2.members[2].state), "made by the bind");
    assert!(
        !three.health.is_ejected() && three.active() == 0,
        "new: fresh"
    );
    drop(in_flight);
    assert_eq!(two.active(), 0, "the guard counts down the kept state");

    // The subset cluster has its own entries, kept the same way.
    let s1_sub = t1.endpoint(sub, addr("10.0.0.1:8080")).unwrap();
    assert!(!Arc::ptr_eq(s1_sub, &bound.members[0].state));
    assert!(Arc::ptr_eq(
        s1_sub,
        t2.endpoint(sub, addr("10.0.0.1:8080")).unwrap()
    ));
    // The other service was never called: it has no state yet.
    assert!(t2.endpoint(OTHER, addr("10.0.0.9:9090")).is_none());
    assert!(t2.cluster(OTHER).is_none());

    // The ejection still runs its time out.
    tokio::time::advance(std::time::Duration::from_secs(30)).await;
    assert!(!one.health.is_ejected());
}

/// A cluster first bound by a request still on the older snapshot gets
/// state for the endpoints of the table's own snapshot.
#[test]
fn a_first_bind_from_an_older_snapshot_sizes_to_the_current_one() {
    let s1 = snap(1, &["10.0.0.1"], RULE);
    let t1 = join(&Table::default(), &s1);
    let s2 = snap(2, &["10.0.0.1", "10.0.0.2"], RULE);
    let t2 = join(&t1, &s2);
    assert!(t2.cluster(CLUSTER).is_none(), "never bound");
    let old = s1.clusters().iter().find(|c| &*c.name == CLUSTER).unwrap();
    let b_old = t2.bind(old);
    assert_eq!(b_old.members.len(), 1);
    let new = s2.clusters().iter().find(|c| &*c.name == CLUSTER).unwrap();
    let b_new = t2.bind(new);
    assert!(Arc::ptr_eq(&b_old.state, &b_new.state));
    assert!(Arc::ptr_eq(
        &b_old.members[0].state,
        &b_new.members[0].state
    ));
    let two = t2.endpoint(CLUSTER, addr("10.0.0.2:8080")).unwrap();
    assert!(Arc::ptr_eq(two, &b_new.members[1].state), "in the table");
}

/// Requests on the table's own snapshot share one member list; one on
/// another snapshot gets its own (its endpoints), with the same states.
#[test]
fn binds_on_the_same_snapshot_share_their_members() {
    let s1 = snap(1, &["10.0.0.1"], RULE);
    let s2 = snap(2, &["10.0.0.1", "10.0.0.2"], RULE);
    let t2 = join(&join(&Table::default(), &s1), &s2);
    let c2 = s2.clusters().iter().find(|c| &*c.name == CLUSTER).unwrap();
    let (a, b) = (t2.bind(c2), t2.bind(c2));
    assert!(Arc::ptr_eq(&a.members, &b.members));
    assert_eq!(a.members.len(), 2);
    let c1 = s1.clusters().iter().find(|c| &*c.name == CLUSTER).unwrap();
    let old = t2.bind(c1);
    assert!(!Arc::ptr_eq(&old.members, &a.members));
    assert_eq!(old.members.len(), 1);
    assert!(Arc::ptr_eq(&old.members[0].state, &a.members[0].state));
}

#[test]
fn what_is_gone_is_dropped_and_comes_back_fresh() {
    let s1 = snap(1, &["10.0.0.1", "10.0.0.2"], RULE);
    let t1 = join(&Table::default(), &s1);
    let c1 = s1.clusters().iter().find(|c| &*c.name == CLUSTER).unwrap();
    drop(t1.bind(c1));
    let gone = t1.endpoint(CLUSTER, addr("10.0.0.2:8080")).unwrap().clone();
    let weak = Arc::downgrade(&gone);
    drop(gone);
    let s2 = snap(2, &["10.0.0.1"], RULE);
    let t2 = join(&t1, &s2);
    assert!(t2.endpoint(CLUSTER, addr("10.0.0.2:8080")).is_none());
    drop(t1);
    assert!(weak.upgrade().is_none(), "nothing holds a removed endpoint");
    // A request still on the old snapshot gets detached state.
    let b = t2.bind(c1);
    assert_eq!(b.members.len(), 2);
    assert!(Arc::ptr_eq(
        &b.members[0].state,
        t2.endpoint(CLUSTER, addr("10.0.0.1:8080")).unwrap()
    ));
    // A removed cluster is dropped too.
    let other = s2.clusters().iter().find(|c| &*c.name == OTHER).unwrap();
    drop(t2.bind(other));
    assert!(t2.cluster(OTHER).is_some());
    let mut view = ProxyView::clone(&s2.view);
    view.version = 3;
    view.services.retain(|s| s.hostname == HOST);
    let t3 = join(&t2, &Snapshot::compile(view, "default").unwrap());
    assert!(t3.cluster(OTHER).is_none() && t3.cluster(CLUSTER).is_some());
}

#[tokio::test]
async fn changed_limits_apply_to_what_is_already_in_flight() {
    let s1 = snap(1, &["10.0.0.1"], RULE);
    let t1 = join(&Table::default(), &s1);
    let c1 = s1.clusters().iter().find(|c| &*c.name == CLUSTER).unwrap();
    let pool = t1.bind(c1).state.pool.clone();
    let _a = pool.admit(c1.limits.as_ref().unwrap(), true).await.unwrap();
    // maxConnections 1 → 2: one more connection, not two.
    let s2 = snap(
        2,
        &["10.0.0.1"],
        &RULE.replace("maxConnections: 1", "maxConnections: 2"),
    );
    let t2 = join(&t1, &s2);
    let c2 = s2.clusters().iter().find(|c| &*c.name == CLUSTER).unwrap();
    let bound = t2.bind(c2);
    assert!(Arc::ptr_eq(&bound.state.pool, &pool));
    let limits = c2.limits.as_ref().unwrap();
    let _b = pool
        .admit(limits, true)
        .await
        .expect("the new limit's slot");
    let third = pool.admit(limits, true);
    tokio::pin!(third);
    assert!(
        futures_poll_once(&mut third).is_none(),
        "queued: both slots are taken, the first by a request from before the push"
    );
    assert_eq!((pool.pending(), pool.requests()), (1, 3));
    assert!(pool.admit(limits, true).await.is_none(), "overflow");
}

fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
