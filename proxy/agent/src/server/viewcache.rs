//! The views of the current snapshot version, built once per scope and
//! shared by the proxies that have that scope ([`ViewCache`]). Its own file
//! because the state every server shares ([`super::Shared`]) holds the
//! cache, while the stream code that sends views uses that state.

use crate::compile::Snapshot;
use crate::protocol::encode;
use crate::view::{self, ViewKey};
use bytes::Bytes;
use mesh_api::syncapi::{AgentMessage, ProxyIdentity, ProxyView};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// One view and its gateway warnings, filled once by whichever proxy asks first.
type Cell = Arc<OnceLock<Built>>;

/// A view as [`ViewCache::get`] hands it out.
#[derive(Clone)]
pub struct Built {
    /// The view itself, which the next delta is computed from. Its services
    /// are the snapshot's own (shared), so holding it costs little.
    pub view: Arc<ProxyView>,
    pub warnings: Arc<Vec<String>>,
    /// The whole `AgentMessage::View`, encoded when a proxy first needs it
    /// whole (most pushes are deltas), shared by the proxies of the cell.
    encoded: Arc<OnceLock<Bytes>>,
}

impl Built {
    /// The view as a full `AgentMessage::View` frame.
    pub fn bytes(&self, agent: &str) -> Bytes {
        self.encoded
            .get_or_init(|| {
                encode(&AgentMessage::View {
                    agent: agent.to_string(),
                    view: ProxyView::clone(&self.view),
                })
            })
            .clone()
    }
}

/// A view's key and whether key material may be sent on the port.
type CacheKey = (ViewKey, bool);

/// A router's namespace and labels: what its Gateways depend on.
type RouterScope = (String, std::collections::BTreeMap<String, String>);

/// Views of the current version by [`ViewKey`]: proxies with the same scope
/// share one computation and one encoding (the first asker computes; the
/// others wait on the same cell instead of all computing it at once). A
/// proxy with on-demand hosts has a view of its own: built for it and not
/// kept here (one per lookup it made would pile up until the next version),
/// made from its scope's shared view ([`view::extend`]).
#[derive(Default)]
pub struct ViewCache {
    inner: Mutex<(u64, HashMap<CacheKey, Cell>)>,
    /// The gateway warnings last logged per router scope (namespace, labels):
    /// each problem is logged once when it appears, not once per version.
    logged: Mutex<HashMap<RouterScope, Vec<String>>>,
}

impl ViewCache {
    /// `id`'s view at `snap`'s version (with the hosts it `requested`) and
    /// its gateway warnings (for proxy-status). Without `secrets` (an
    /// unauthenticated port next to an authenticated one) a gateway gets no
    /// private keys.
    pub fn get(
        &self,
        snap: &Snapshot,
        id: &ProxyIdentity,
        secrets: bool,
        requested: &BTreeSet<String>,
    ) -> Built {
        if !requested.is_empty() {
            // The scope's shared view plus the proxy's own hosts.
            let base = self.get(snap, id, secrets, &BTreeSet::new());
            return match view::extend(snap, id, &base.view, requested) {
                Some(v) => Built {
                    view: Arc::new(v),
                    warnings: base.warnings,
                    encoded: Arc::default(),
                },
                None => self.build(snap, id, secrets, requested),
            };
        }
        let key = (view::key(snap, id), secrets);
        let cell = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if g.0 < snap.version {
                *g = (snap.version, HashMap::new());
            }
            if g.0 == snap.version {
                g.1.entry(key).or_default().clone()
            } else {
                Arc::new(OnceLock::new()) // an older snapshot than cached: don't cache
            }
        };
        cell.get_or_init(|| self.build(snap, id, secrets, requested))
            .clone()
    }

    fn build(
        &self,
        snap: &Snapshot,
        id: &ProxyIdentity,
        secrets: bool,
        requested: &BTreeSet<String>,
    ) -> Built {
        let mut view = view::build_with(snap, id, requested);
        if let (false, Some(g)) = (secrets, view.gateway.as_mut()) {
            crate::gateway::without_credentials(g);
        }
        let warnings = view
            .gateway
            .as_ref()
            .map(|g| g.warnings.clone())
            .unwrap_or_default();
        if id.router {
            self.log_changes(id, &warnings);
        }
        Built {
            view: Arc::new(view),
            warnings: Arc::new(warnings),
            encoded: Arc::default(),
        }
    }

    /// Logs the warnings of a router scope that are new since the last view.
    /// They name Secrets and what is wrong with them, never their bytes.
    fn log_changes(&self, id: &ProxyIdentity, warnings: &[String]) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let prev = logged
            .entry((id.namespace.clone(), id.labels.clone()))
            .or_default();
        for w in warnings.iter().filter(|w| !prev.contains(w)) {
            tracing::warn!(namespace = %id.namespace, warning = %w, "gateway server disabled");
        }
        for w in prev.iter().filter(|w| !warnings.contains(w)) {
            tracing::info!(namespace = %id.namespace, warning = %w, "gateway problem resolved");
        }
        *prev = warnings.to_vec();
    }
}
