//! What a sync stream sends when a snapshot changes. Views are built once per
//! scope and version ([`ViewCache`](super::viewcache::ViewCache)) and sent
//! whole, or as a delta from the last view sent on that stream
//! ([`mesh_api::syncdelta`]) to proxies that take deltas. When the snapshot
//! changed only endpoints since the view a stream last built
//! ([`crate::compile::Snapshot::structure`]), that view is patched with the
//! changed services and the delta carries them, without a view being built;
//! streams whose view holds none of them are not woken at all
//! ([`super::interest`]). When other services changed but none can be in a
//! proxy's view ([`crate::compile::change`]), that proxy gets an empty delta
//! (the new version number) without its view being built.

use super::interest::Pending;
use super::shared::Shared;
use super::xds_metrics::PushKind;
use crate::compile::{Snapshot, Visibility};
use crate::protocol::{encode, write_frame, ProtocolError};
use crate::view;
use mesh_api::syncapi::{AgentMessage, ProxyIdentity, ProxyView, Service};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};

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
            // A host named by a change differs from the version before it
            // ([`crate::compile::change::SnapshotChange`] compares contents), so
            // another `Arc` is enough: comparing the services again, for
            // every stream that holds the host, was most of this function's
            // time. Only a change undone by a later one is sent for nothing.
            for i in found {
                let s = &last.services[i];
                let now = snap.services.get(&s.hostname)?;
                if !Arc::ptr_eq(now, s) {
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
    // Framed where it is built: written as it is, without `write_frame`'s
    // copy to put the prefix in front (one per affected proxy and change).
    let frame = shared
        .encoded
        .delta_frame(&shared.agent, pushed.version, snap.version, &upsert);
    w.write_all(&frame).await?;
    w.flush().await?;
    shared
        .xds
        .sent(kind, frame.len() - mesh_api::syncframe::PREFIX);
    pushed.version = snap.version;
    shared.tracker.sent(id, snap.version);
    Ok(())
}
