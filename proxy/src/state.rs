//! Run-time state beside the config: what the data path learns about clusters
//! and endpoints (outlier health and ejections, requests in flight, the
//! round-robin cursor, connection-pool counts and queue) in a table keyed by
//! cluster name and endpoint address, outside the snapshot.
//!
//! Snapshots are rebuilt on every push, for any change anywhere in the mesh;
//! if they carried this state, a push would readmit an ejected endpoint, reset
//! least-request counts and open the connection pool to a fresh limit's worth
//! of requests. Envoy keeps such state across updates; so do we: each applied
//! snapshot *joins* the previous table ([`join`], a plain function), keeping the
//! entries (the same `Arc`s) of clusters and endpoints that still exist and
//! dropping the rest.
//!
//! A request binds its cluster to the table once ([`Table::bind`]) and then
//! works on the bound state. A request still on an older snapshot, racing a
//! push that removed its endpoint or cluster, gets detached fresh state for
//! what the table no longer holds: nothing panics and nothing leaks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use crate::byaddr::ByAddr;
use crate::limits::PoolState;
use crate::outlier::EndpointHealth;
use crate::snapshot::{Cluster, EndpointRef, Snapshot};

/// One endpoint's state within one cluster.
#[derive(Debug, Default)]
pub struct EndpointState {
    /// Requests in flight (least-request balancing, `rq_active`).
    active: AtomicUsize,
    pub health: EndpointHealth,
}

impl EndpointState {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One request in flight to an endpoint; dropping it ends the count, on every
/// path (answer read, retry, error, client gone).
#[derive(Debug)]
#[must_use = "the request stops counting as in flight when this is dropped"]
pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One cluster's state.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Round-robin cursor.
    pub rr: AtomicUsize,
    /// Connection-pool admission counts and queue.
    pub pool: Arc<PoolState>,
}

/// One cluster's slot in the table: empty until a request binds the cluster.
/// A sidecar sees every service of its namespace (and more) and calls few of
/// them, so an unused cluster costs its slot (the key shares the snapshot's
/// name), not the allocations of its state.
#[derive(Debug)]
struct Entry {
    /// The cluster as the table's snapshot has it: a first bind by a request
    /// still on an older snapshot must not size the state to that one's
    /// endpoints.
    cluster: Arc<Cluster>,
    bound: OnceLock<Bound_>,
}

/// A bound cluster's state.
#[derive(Debug)]
struct Bound_ {
    state: Arc<ClusterState>,
    /// One per endpoint of the cluster; each endpoint's state is made when a
    /// request first picks among them (kept across pushes once made).
    endpoints: ByAddr<OnceLock<Arc<EndpointState>>>,
    /// The members as requests on the table's own snapshot bind them, made
    /// by the first: later requests share the list (one atomic increment)
    /// instead of looking up every endpoint again. A push makes a new table.
    members: OnceLock<Arc<[Member]>>,
}

impl Entry {
    fn get(&self) -> Option<&Bound_> {
        self.bound.get()
    }

    fn get_or_bind(&self) -> &Bound_ {
        self.bound
            .get_or_init(|| Bound_::new(Arc::default(), &self.cluster))
    }

    /// The endpoint's state, if a request ever bound it.
    fn endpoint(&self, addr: SocketAddr) -> Option<&Arc<EndpointState>> {
        self.get()?.endpoints.get(addr)?.get()
    }
}

impl Bound_ {
    /// Fresh state for `c`'s endpoints (none made yet).
    fn new(state: Arc<ClusterState>, c: &Cluster) -> Bound_ {
        Bound_ {
            state,
            endpoints: ByAddr::new(
                c.endpoints
                    .iter()
                    .map(|e| (e.addr, OnceLock::new()))
                    .collect(),
            ),
            members: OnceLock::new(),
        }
    }

    /// `c`'s endpoints, each with its state (made now where none was).
    fn members(&self, c: &Cluster) -> Arc<[Member]> {
        EndpointRef::each(&c.endpoints)
            .map(|ep| Member {
                state: self.endpoint_or_new(ep.addr).cloned().unwrap_or_default(),
                ep,
            })
            .collect()
    }

    /// The endpoint's state, made now if no request bound it before.
    fn endpoint_or_new(&self, addr: SocketAddr) -> Option<&Arc<EndpointState>> {
        Some(self.endpoints.get(addr)?.get_or_init(Arc::default))
    }
}

/// The state of every cluster and endpoint of one snapshot. Immutable but for
/// the slots a first bind fills: a push builds the next one with [`join`].
#[derive(Debug, Default)]
pub struct Table {
    /// foldhash: every request looks its cluster up here.
    clusters: HashMap<Arc<str>, Entry, foldhash::fast::RandomState>,
}

/// The table for `snap`: `old`'s entries for the clusters (by name) and
/// endpoints (by cluster name and address) `snap` still has, fresh ones for
/// the rest; entries `snap` no longer has are dropped.
///
/// A cluster whose settings changed keeps its state too. Its connection pool
/// keeps counting what is in flight and applies the new limits to new
/// requests (see [`PoolState::admit`]); health and ejections stay, because an
/// endpoint that was failing a moment ago is still failing, whatever the rule
/// now says.
pub fn join(old: &Table, snap: &Snapshot) -> Table {
    let mut clusters = HashMap::default();
    for c in snap.all_clusters() {
        let bound = match old.clusters.get(&*c.name).and_then(Entry::get) {
            // Never bound: nothing to keep.
            None => OnceLock::new(),
            Some(prev) => {
                let endpoints = ByAddr::new(
                    c.endpoints
                        .iter()
                        .map(|e| {
                            let kept = prev.endpoints.get(e.addr).and_then(OnceLock::get);
                            (
                                e.addr,
                                kept.cloned().map(OnceLock::from).unwrap_or_default(),
                            )
                        })
                        .collect(),
                );
                OnceLock::from(Bound_ {
                    state: prev.state.clone(),
                    endpoints,
                    members: OnceLock::new(),
                })
            }
        };
        clusters.entry(c.name.clone()).or_insert(Entry {
            cluster: c.clone(),
            bound,
        });
    }
    Table { clusters }
}

impl Table {
    /// A cluster's state, if the table has it and a request bound it.
    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterState>> {
        self.clusters.get(name)?.get().map(|b| &b.state)
    }

    /// An endpoint's state within a cluster, if the table has it and a
    /// request bound it (until then it has none to show).
    pub fn endpoint(&self, cluster: &str, addr: SocketAddr) -> Option<&Arc<EndpointState>> {
        self.clusters.get(cluster)?.endpoint(addr)
    }

    /// `c` with the state of it and each of its endpoints (made on the
    /// cluster's first bind). A cluster the table does not have (a request on
    /// an older snapshot racing a push that removed it) gets detached fresh
    /// state.
    pub fn bind(&self, c: &Cluster) -> Bound {
        let Some(entry) = self.clusters.get(&*c.name) else {
            return Bound {
                state: Arc::default(),
                members: EndpointRef::each(&c.endpoints)
                    .map(|ep| Member {
                        state: Arc::default(),
                        ep,
                    })
                    .collect(),
            };
        };
        let b = entry.get_or_bind();
        let members = if Arc::ptr_eq(&entry.cluster.endpoints, &c.endpoints) {
            b.members.get_or_init(|| b.members(c)).clone()
        } else {
            // A request on another snapshot: its own endpoint list.
            b.members(c)
        };
        Bound {
            state: b.state.clone(),
            members,
        }
    }
}

/// An endpoint and its state, as one request sees them.
#[derive(Debug, Clone)]
pub struct Member {
    pub ep: EndpointRef,
    pub state: Arc<EndpointState>,
}

impl crate::lb::Candidate for Member {
    fn addr(&self) -> SocketAddr {
        self.ep.addr
    }
    fn in_flight(&self) -> usize {
        self.state.active()
    }
}

impl crate::outlier::Monitored for Member {
    fn addr(&self) -> SocketAddr {
        self.ep.addr
    }
    fn health(&self) -> &EndpointHealth {
        &self.state.health
    }
}

/// A cluster bound to its state: its endpoints in the cluster's order.
#[derive(Debug)]
pub struct Bound {
    pub state: Arc<ClusterState>,
    pub members: Arc<[Member]>,
}

/// The current table, beside the snapshot store (in `Shared`).
#[derive(Default)]
pub struct Runtime {
    table: ArcSwap<Table>,
    /// Joins one snapshot at a time, so none is joined against a stale table.
    joining: Mutex<()>,
}

impl Runtime {
    pub fn load(&self) -> Arc<Table> {
        self.table.load_full()
    }

    pub fn bind(&self, c: &Cluster) -> Bound {
        self.table.load().bind(c)
    }

    /// Joins `snap`, then hands it to `then` (which installs it) before the
    /// next join can start.
    pub fn join_then<R>(&self, snap: Snapshot, then: impl FnOnce(Snapshot) -> R) -> R {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        let _one = self.joining.lock().unwrap_or_else(|e| e.into_inner());
        let next = join(&self.table.load(), &snap);
        self.table.store(Arc::new(next));
        then(snap)
    }
}

#[cfg(test)]
mod tests {
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
}
