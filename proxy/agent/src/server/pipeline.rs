//! Source events → store → debounced compile → published snapshot.

use crate::compile::change::SnapshotChange;
use crate::compile::{compile_cached, compile_endpoints, CompileCache, Settings, Snapshot};
use crate::store::{SourceEvent, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc::UnboundedReceiver, watch};
use tokio_util::sync::CancellationToken;

/// First version of this process: milliseconds since the epoch, so versions keep
/// growing across agent restarts and a resyncing proxy never sees one go backwards.
pub fn initial_version() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

/// Applies events and publishes a new snapshot after each burst (events arriving
/// within `debounce` of each other are coalesced, bounded by 1 s). The first
/// change after a quiet period (nothing published for `debounce`) is
/// published at once when it changes services only, the rest of its burst
/// coalesced after it: a lone endpoint change waits for nothing. Other
/// changes (routes, policies) wait for their burst, so objects applied
/// together take effect together. Nothing is published before the source
/// says [`SourceEvent::Synced`]: a Kubernetes source lists its kinds one by
/// one, and a view built between two lists (all Services, no EndpointSlices
/// yet) would take every route away from a proxy that (re)subscribes then.
pub async fn run(
    events: UnboundedReceiver<SourceEvent>,
    settings: Arc<Settings>,
    publish: watch::Sender<Arc<Snapshot>>,
    debounce: Duration,
    shutdown: CancellationToken,
) {
    let (_keep, rx) = watch::channel(settings);
    run_live(events, rx, publish, debounce, shutdown).await
}

/// [`run`] with settings that can change (mesh config reload): a change
/// recompiles the store with the new settings.
pub async fn run_live(
    mut events: UnboundedReceiver<SourceEvent>,
    mut settings_rx: watch::Receiver<Arc<Settings>>,
    publish: watch::Sender<Arc<Snapshot>>,
    debounce: Duration,
    shutdown: CancellationToken,
) {
    let mut settings = settings_rx.borrow_and_update().clone();
    let mut settings_open = true;
    let mut store = Store::default();
    let mut cache = CompileCache::default();
    let mut version = publish.borrow().version.max(initial_version());
    let mut last_publish: Option<tokio::time::Instant> = None;
    let mut synced = false;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e { Some(e) => Some(e), None => return },
            r = settings_rx.changed(), if settings_open => {
                settings_open = r.is_ok();
                None
            }
        };
        let mut changed = match first {
            Some(e) => apply(&mut store, &mut synced, e),
            None => {
                let next = settings_rx.borrow_and_update().clone();
                let differs = *next != *settings;
                settings = next;
                // New settings change every service's compiled view.
                cache = CompileCache::default();
                differs
            }
        };
        let now = tokio::time::Instant::now();
        let deadline = now + Duration::from_secs(1);
        // After a quiet period, a change to services alone (endpoint churn)
        // goes out at once; anything else waits for its burst, so several
        // objects applied together reach proxies together.
        if changed && leading_edge(last_publish, now, debounce) {
            let started = std::time::Instant::now();
            let mut snap = compile_next(
                &publish.borrow(),
                &mut store,
                &settings,
                version + 1,
                &mut cache,
            );
            note_change(&publish.borrow(), &mut snap);
            if snap.change.is_some() {
                version += 1;
                publish_snapshot(&publish, snap, started);
                last_publish = Some(tokio::time::Instant::now());
                continue;
            }
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(debounce) => break,
                _ = tokio::time::sleep_until(deadline) => break,
                e = events.recv() => match e {
                    Some(e) => changed |= apply(&mut store, &mut synced, e),
                    None => break,
                },
            }
        }
        if !changed || !synced {
            continue;
        }
        version += 1;
        let started = std::time::Instant::now();
        let mut snap = compile_next(
            &publish.borrow(),
            &mut store,
            &settings,
            version,
            &mut cache,
        );
        note_change(&publish.borrow(), &mut snap);
        publish_snapshot(&publish, snap, started);
        last_publish = Some(tokio::time::Instant::now());
    }
}

/// Applies `e`; returns whether a snapshot is due. [`SourceEvent::Synced`]
/// is one the first time (the first snapshot, even of an empty store); the
/// store takes every other event.
fn apply(store: &mut Store, synced: &mut bool, e: SourceEvent) -> bool {
    match e {
        SourceEvent::Synced => !std::mem::replace(synced, true),
        e => store.apply(e),
    }
}

/// The snapshot after `prev`: when only EndpointSlices changed since it
/// (with the same settings), `prev` with their services built again;
/// otherwise a compile of the whole store.
fn compile_next(
    prev: &Snapshot,
    store: &mut Store,
    settings: &Arc<Settings>,
    version: u64,
    cache: &mut CompileCache,
) -> Snapshot {
    let changes = store.take_changes();
    let same_settings = Arc::ptr_eq(&prev.settings, settings);
    same_settings
        .then(|| compile_endpoints(prev, store, &changes, version, cache))
        .flatten()
        .unwrap_or_else(|| compile_cached(store, settings, version, cache))
}

/// Records in `snap` what differs from `prev` (the snapshot published
/// before): the changed services (already known when `compile_endpoints`
/// made it from `prev`), and the version of its structure.
fn note_change(prev: &Snapshot, snap: &mut Snapshot) {
    if snap.change.is_none() {
        snap.change = SnapshotChange::between(prev, snap).map(Arc::new);
    }
    snap.structure = match &snap.change {
        Some(c) if c.endpoints_only && prev.structure != 0 => prev.structure,
        _ => snap.version,
    };
    snap.recent_changes = match &snap.change {
        // Same structure as `prev`: an endpoints-only change over the same
        // view shapes (a new structure is always this snapshot's own version).
        Some(c) if snap.structure == prev.structure => {
            let mut recent = (*prev.recent_changes).clone();
            if recent.len() == crate::compile::RECENT_CHANGES {
                recent.pop_front();
            }
            recent.push_back(c.clone());
            Arc::new(recent)
        }
        _ => Arc::default(),
    };
}

/// Logs what `snap` rejected and its summary, and publishes it.
fn publish_snapshot(
    publish: &watch::Sender<Arc<Snapshot>>,
    snap: Snapshot,
    started: std::time::Instant,
) {
    for r in &snap.rejected {
        for e in &r.errors {
            tracing::warn!(resource = %r.resource, error = %e, "rejected");
        }
    }
    tracing::info!(
        version = snap.version,
        services = snap.services.len(),
        rejected = snap.rejected.len(),
        compile_ms = started.elapsed().as_secs_f64() * 1e3,
        "snapshot published"
    );
    publish.send_replace(Arc::new(snap));
}

/// Whether a change arriving `now` is published without waiting: something
/// was published before, and not within the last `debounce`.
fn leading_edge(
    last_publish: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
    debounce: Duration,
) -> bool {
    last_publish.is_some_and(|t| now.duration_since(t) >= debounce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn event(origin: &str, yaml: &str) -> SourceEvent {
        let (objects, errors) = crate::objects::parse_yaml(yaml);
        assert!(errors.is_empty(), "{errors:?}");
        SourceEvent::Replace {
            origin: origin.into(),
            objects: objects.into_iter().map(|(_, o)| o).collect(),
            errors: vec![],
        }
    }

    fn service(name: &str) -> String {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{ports: [{{port: 80}}]}}\n")
    }

    /// A pipeline with default settings: its events' sender, its snapshots,
    /// and the guard that stops it.
    fn start(
        debounce: Duration,
    ) -> (
        mpsc::UnboundedSender<SourceEvent>,
        watch::Receiver<Arc<Snapshot>>,
        tokio_util::sync::DropGuard,
    ) {
        let (tx, events) = mpsc::unbounded_channel();
        let (publish, rx) = watch::channel(Arc::new(Snapshot::default()));
        let shutdown = CancellationToken::new();
        tokio::spawn(run(
            events,
            Arc::default(),
            publish,
            debounce,
            shutdown.clone(),
        ));
        (tx, rx, shutdown.drop_guard())
    }

    /// Waits for the next snapshot; how long it took on the (paused) clock.
    async fn next(rx: &mut watch::Receiver<Arc<Snapshot>>) -> (Duration, Arc<Snapshot>) {
        let t = tokio::time::Instant::now();
        rx.changed().await.unwrap();
        (t.elapsed(), rx.borrow_and_update().clone())
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_change_after_quiet_goes_at_once_the_rest_waits_for_its_burst() {
        let debounce = Duration::from_millis(100);
        let (tx, mut rx, _guard) = start(debounce);

        // Startup: the initial objects, then the source's Synced, wait for
        // their burst to end.
        tx.send(event("a", &service("a"))).unwrap();
        tx.send(event("b", &service("b"))).unwrap();
        tx.send(SourceEvent::Synced).unwrap();
        let (took, snap) = next(&mut rx).await;
        assert_eq!(took, debounce);
        assert_eq!(snap.services.len(), 2);

        // Quiet, then one change: published without waiting.
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send(event("c", &service("c"))).unwrap();
        let (took, snap) = next(&mut rx).await;
        assert_eq!(took, Duration::ZERO);
        assert_eq!(snap.services.len(), 3);

        // Its burst: coalesced, after the quiet time.
        tx.send(event("d", &service("d"))).unwrap();
        tx.send(event("e", &service("e"))).unwrap();
        let (took, snap) = next(&mut rx).await;
        assert_eq!(took, debounce);
        assert_eq!(snap.services.len(), 5);

        // Quiet, then a policy and a route applied together: not services
        // alone, so they wait for their burst and arrive in one snapshot.
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send(event("pa", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: ns}\nspec: {mtls: {mode: STRICT}}\n")).unwrap();
        tx.send(event("vs", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: ns}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n")).unwrap();
        let (took, snap) = next(&mut rx).await;
        assert_eq!(took, debounce);
        assert_eq!(
            (snap.peer_authentications.len(), snap.virtual_services.len()),
            (1, 1)
        );
        assert!(snap.change.is_none());
    }

    /// A Kubernetes source lists its kinds one by one: between two lists
    /// (Services in, EndpointSlices not yet) a snapshot would give a
    /// (re)subscribing proxy a view without endpoints. Nothing is published
    /// before Synced, however long the lists take; then everything at once.
    #[tokio::test(start_paused = true)]
    async fn nothing_is_published_before_the_source_is_synced() {
        let debounce = Duration::from_millis(100);
        let (tx, mut rx, _guard) = start(debounce);

        // The Services' list, then a long wait for the EndpointSlices' list:
        // far past the debounce and the 1 s bound of a burst. (The clock is
        // paused: it moves only when the pipeline has nothing left to do, so
        // these 30 s are every timer of the pipeline having fired.)
        tx.send(event("Service/ns/a", &service("a"))).unwrap();
        tx.send(event("Service/ns/b", &service("b"))).unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!rx.has_changed().unwrap(), "published before Synced");
        assert_eq!(rx.borrow().version, 0);

        tx.send(event(
            "EndpointSlice/ns/a-1",
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, namespace: ns, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nports: [{port: 80}]\nendpoints: [{addresses: [10.1.0.1]}]\n",
        ))
        .unwrap();
        tx.send(SourceEvent::Synced).unwrap();
        let (took, snap) = next(&mut rx).await;
        assert_eq!(took, debounce, "the startup burst ends with Synced");
        assert_eq!(snap.services.len(), 2);
        let a = &snap.services["a.ns.svc.cluster.local"];
        assert_eq!(a.endpoints.len(), 1, "{a:?}");

        // A second Synced (a source that relisted) is no change of its own.
        tx.send(SourceEvent::Synced).unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!rx.has_changed().unwrap(), "a second Synced published");
        tx.send(event("Service/ns/c", &service("c"))).unwrap();
        let (took, snap) = next(&mut rx).await;
        assert_eq!(took, Duration::ZERO, "a lone service change after quiet");
        assert_eq!(snap.services.len(), 3);
    }

    /// A source with nothing in it (an empty folder) still gets a first
    /// snapshot: its proxies get an empty view instead of waiting forever.
    #[tokio::test(start_paused = true)]
    async fn an_empty_synced_source_publishes_an_empty_snapshot() {
        let (tx, mut rx, _guard) = start(Duration::from_millis(100));
        tx.send(SourceEvent::Synced).unwrap();
        let (_, snap) = next(&mut rx).await;
        assert!(snap.version > 0);
        assert!(snap.services.is_empty());
    }
}
