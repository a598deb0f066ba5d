//! The state the stream and debug servers share ([`Shared`]) and the CA as
//! served on the sync port ([`CaService`]). Its own file so the server files
//! can use it without depending on `server/mod.rs`, which declares them.

use super::{access, encoded, interest, tracker, viewcache, xds_metrics};
use crate::compile::Snapshot;
use std::sync::Arc;
use tokio::sync::watch;

/// State shared by the stream and debug servers.
pub struct Shared {
    /// Name shown in the AGENT column (e.g. the pod name).
    pub agent: String,
    /// Latest snapshot; a `watch` keeps only the newest, so a slow reader skips
    /// intermediate versions instead of queueing them.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub tracker: tracker::Tracker,
    /// Which streams each snapshot concerns (who gets woken).
    pub interest: Arc<interest::Interest>,
    pub views: viewcache::ViewCache,
    /// Changed services encoded once for the deltas of every stream.
    pub encoded: encoded::Encoded,
    /// The mesh CA and how it authenticates callers.
    pub ca: Option<Arc<CaService>>,
    /// Subscriptions refused so far (`/metrics`).
    pub refusals: access::Refusals,
    /// Subscriptions authenticated so far, by credential (`/metrics`).
    pub accepted: access::Accepted,
    /// Views pushed and refused, push times (`/metrics`, istiod's names).
    pub xds: xds_metrics::XdsMetrics,
}

/// The CA as served on the sync port. The CA in force can be replaced (a
/// reloaded `cacerts` folder); whoever depends on it (the serving certificate,
/// root publication) subscribes to the changes.
pub struct CaService {
    ca: watch::Sender<Arc<crate::ca::Ca>>,
    pub auth: crate::ca::auth::Authenticator,
    /// Changed `cacerts` folders that were not usable and were refused (the CA
    /// in force stayed): a positive signal that a reload was looked at.
    pub reloads_refused: std::sync::atomic::AtomicU64,
}

impl CaService {
    pub fn new(ca: crate::ca::Ca, auth: crate::ca::auth::Authenticator) -> CaService {
        CaService {
            ca: watch::channel(Arc::new(ca)).0,
            auth,
            reloads_refused: 0.into(),
        }
    }

    /// The CA in force.
    pub fn current(&self) -> Arc<crate::ca::Ca> {
        self.ca.borrow().clone()
    }

    /// Puts `ca` in force; certificates issued from now on come from it.
    pub fn replace(&self, ca: crate::ca::Ca) {
        self.ca.send_replace(Arc::new(ca));
    }

    /// Follows the CA in force.
    pub fn subscribe(&self) -> watch::Receiver<Arc<crate::ca::Ca>> {
        self.ca.subscribe()
    }
}

impl Shared {
    pub fn new(agent: impl Into<String>, snapshots: watch::Receiver<Arc<Snapshot>>) -> Arc<Self> {
        Shared::with_ca(agent, snapshots, None)
    }

    pub fn with_ca(
        agent: impl Into<String>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        ca: Option<Arc<CaService>>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            agent: agent.into(),
            snapshots,
            tracker: tracker::Tracker::default(),
            interest: Arc::default(),
            views: viewcache::ViewCache::default(),
            encoded: encoded::Encoded::default(),
            ca,
            refusals: access::Refusals::default(),
            accepted: access::Accepted::default(),
            xds: xds_metrics::XdsMetrics::default(),
        })
    }
}
