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
mod tests;
