//! What a sync stream sends when a snapshot changes. Views are built once per
//! scope and version ([`ViewCache`]) and sent whole, or as a delta from the
//! last view sent on that stream ([`mesh_api::syncdelta`]) to proxies that
//! take deltas. When the snapshot changed only endpoints since the view a
//! stream last built ([`crate::compile::Snapshot::structure`]), that view is
//! patched with the changed services and the delta carries them, without a
//! view being built; streams whose view holds none of them are not woken at
//! all ([`super::interest`]). When other services changed but none can be in
//! a proxy's view ([`crate::compile::change`]), that proxy gets an empty
//! delta (the new version number) without its view being built.

use super::interest::Pending;
use super::xds_metrics::PushKind;
use super::Shared;
use crate::compile::{Snapshot, Visibility};
use crate::protocol::{encode, write_frame, ProtocolError};
use crate::view::{self, ViewKey};
use bytes::Bytes;
use mesh_api::syncapi::{AgentMessage, ProxyIdentity, ProxyView, Service};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncWrite, AsyncWriteExt};

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

/// What this stream last sent, for deltas.
pub(super) struct Pushed {
    /// The proxy applies deltas (it said so when subscribing).
    deltas: bool,
    /// The last view built for this stream, when `deltas`.
    last: Option<Arc<ProxyView>>,
    /// The version the proxy has now: `last`'s, or a later one sent as an
    /// empty delta because nothing in its view changed.
    version: u64,
    /// The snapshot structure `last` was built at, and with which on-demand
    /// hosts: while both hold, `last` is patched with new endpoints instead
    /// of being built again.
    structure: u64,
    requested: BTreeSet<String>,
}

impl Pushed {
    pub(super) fn new(deltas: bool) -> Pushed {
        Pushed {
            deltas,
            last: None,
            version: 0,
            structure: 0,
            requested: BTreeSet::new(),
        }
    }

    /// For a snapshot that changed only endpoints since `last` was built:
    /// the services of `last` whose endpoints differ now, among the hosts
    /// of the changes the stream was poked for (`pending`), or of every
    /// change since its version when those are not known. `None` when
    /// `last` must be built again (another structure, other on-demand
    /// hosts, a gateway, a host gone).
    fn patch(
        &self,
        snap: &Snapshot,
        id: &ProxyIdentity,
        requested: &BTreeSet<String>,
        pending: &Pending,
    ) -> Option<Vec<Arc<Service>>> {
        let last = self.last.as_ref()?;
        let endpoints_only = snap.change.as_ref().is_some_and(|c| c.endpoints_only);
        if !self.deltas
            || !endpoints_only
            || id.router
            || self.structure == 0
            || self.structure != snap.structure
            || self.requested != *requested
        {
            return None;
        }
        let mut changed = Vec::new();
        let differs = |now: &Arc<Service>, s: &Arc<Service>| !Arc::ptr_eq(now, s) && **now != **s;
        let hosts = pending
            .hosts_since(self.version)
            .or_else(|| snap.hosts_changed_since(self.version));
        if let Some(hosts) = hosts {
            // Only these can differ: look them up in the view (sorted by
            // hostname), not the view's hundred services in the registry.
            let mut found: Vec<usize> = hosts
                .into_iter()
                .filter_map(|h| {
                    last.services
                        .binary_search_by(|s| s.hostname.as_str().cmp(h))
                        .ok()
                })
                .collect();
            found.sort_unstable();
            found.dedup();
            for i in found {
                let s = &last.services[i];
                let now = snap.services.get(&s.hostname)?;
                if differs(now, s) {
                    changed.push(now.clone());
                }
            }
            return Some(changed);
        }
        for s in &last.services {
            let now = snap.services.get(&s.hostname)?;
            if differs(now, s) {
                changed.push(now.clone());
            }
        }
        Some(changed)
    }

    /// Whether `snap` leaves this proxy's view as it is, known without
    /// building it: only services changed since the version the proxy has,
    /// none is in its view or asked for, and none can enter its
    /// namespace-scoped view. Gateways and proxies with a Sidecar or
    /// mesh-wide visibility are always rebuilt.
    fn untouched(&self, snap: &Snapshot, id: &ProxyIdentity, requested: &BTreeSet<String>) -> bool {
        let (Some(last), Some(change)) = (&self.last, &snap.change) else {
            return false;
        };
        // A proxy that looked up a host since its last view needs it built:
        // its stream may lag behind (it is not woken for changes that do not
        // concern it), so `version` alone does not say the view is current.
        self.deltas
            && !id.router
            && self.requested == *requested
            && self.version == change.prev_version
            && snap.settings.visibility != Visibility::Mesh
            && !view::has_sidecar(snap, id)
            && change.hosts.iter().all(|(h, reach)| {
                !reach.admits(&id.namespace)
                    && !requested.contains(h)
                    // Views list services sorted by hostname.
                    && last
                        .services
                        .binary_search_by(|s| s.hostname.as_str().cmp(h))
                        .is_err()
            })
    }
}

/// Writes `identity`'s view of `snap` (with its on-demand hosts), as a delta
/// from the last one when the proxy takes deltas and only services changed,
/// and records it as sent. `pending`: the changes the stream was poked for
/// ([`Pending::unknown`] when it was not poked).
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_view<W: AsyncWrite + Unpin>(
    shared: &Shared,
    w: &mut W,
    snap: &Snapshot,
    identity: &ProxyIdentity,
    secrets: bool,
    requested: &BTreeSet<String>,
    id: u64,
    pushed: &mut Pushed,
    pending: &Pending,
) -> Result<(), ProtocolError> {
    if let Some(upsert) = pushed.patch(snap, identity, requested, pending) {
        // Endpoints moved: the services of the view that changed, no view
        // built. Nothing in the view changed: nothing is sent (the proxy
        // keeps its version; the next delta starts from it).
        if upsert.is_empty() {
            return Ok(());
        }
        let last = pushed.last.as_mut().expect("patch needs a last view");
        let view = Arc::make_mut(last);
        for s in &upsert {
            if let Ok(i) = view
                .services
                .binary_search_by(|x| x.hostname.as_str().cmp(&s.hostname))
            {
                view.services[i] = s.clone();
            }
        }
        view.version = snap.version;
        return send_services(shared, w, snap, id, pushed, upsert, PushKind::Delta).await;
    }
    if pushed.untouched(snap, identity, requested) {
        return send_services(shared, w, snap, id, pushed, Vec::new(), PushKind::Unchanged).await;
    }
    let built = shared.views.get(snap, identity, secrets, requested);
    let delta = pushed
        .last
        .as_ref()
        .filter(|_| pushed.deltas)
        .and_then(|old| mesh_api::syncdelta::diff(old, &built.view));
    let (bytes, kind) = match delta {
        Some(mut delta) => {
            // The proxy may be past `last` by empty deltas.
            delta.base = pushed.version;
            (
                encode(&AgentMessage::Delta {
                    agent: shared.agent.clone(),
                    delta,
                }),
                PushKind::Delta,
            )
        }
        None => (built.bytes(&shared.agent), PushKind::Full),
    };
    write_frame(w, &bytes).await?;
    w.flush().await?;
    shared.xds.sent(kind, bytes.len());
    if pushed.deltas {
        pushed.last = Some(built.view.clone());
        pushed.structure = snap.structure;
        pushed.requested.clone_from(requested);
    }
    // Whether every change must wake this stream: its view is not
    // namespace-scoped (see `Pushed::untouched`).
    let always = identity.router
        || snap.settings.visibility == Visibility::Mesh
        || view::has_sidecar(snap, identity);
    shared.interest.update(id, always, requested);
    pushed.version = snap.version;
    shared
        .tracker
        .sent_with_warnings(id, snap.version, built.warnings);
    Ok(())
}

/// Sends `snap`'s version as a delta that upserts `upsert` (nothing: the
/// version alone) on the version the proxy has, and records it as sent.
async fn send_services<W: AsyncWrite + Unpin>(
    shared: &Shared,
    w: &mut W,
    snap: &Snapshot,
    id: u64,
    pushed: &mut Pushed,
    upsert: Vec<Arc<Service>>,
    kind: PushKind,
) -> Result<(), ProtocolError> {
    let bytes = shared
        .encoded
        .delta(&shared.agent, pushed.version, snap.version, &upsert);
    write_frame(w, &bytes).await?;
    w.flush().await?;
    shared.xds.sent(kind, bytes.len());
    pushed.version = snap.version;
    shared.tracker.sent(id, snap.version);
    Ok(())
}
