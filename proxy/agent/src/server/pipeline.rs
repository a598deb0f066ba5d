//! Source events → store → debounced compile → published snapshot.

use crate::compile::{compile_cached, CompileCache, Settings, Snapshot};
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
/// within `debounce` of each other are coalesced, bounded by 1 s).
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
            Some(e) => store.apply(e),
            None => {
                let next = settings_rx.borrow_and_update().clone();
                let differs = *next != *settings;
                settings = next;
                // New settings change every service's compiled view.
                cache = CompileCache::default();
                differs
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(debounce) => break,
                _ = tokio::time::sleep_until(deadline) => break,
                e = events.recv() => match e {
                    Some(e) => changed |= store.apply(e),
                    None => break,
                },
            }
        }
        if !changed {
            continue;
        }
        version += 1;
        let started = std::time::Instant::now();
        let snap = compile_cached(&store, &settings, version, &mut cache);
        for r in &snap.rejected {
            for e in &r.errors {
                tracing::warn!(resource = %r.resource, error = %e, "rejected");
            }
        }
        tracing::info!(
            version,
            services = snap.services.len(),
            rejected = snap.rejected.len(),
            compile_ms = started.elapsed().as_secs_f64() * 1e3,
            "snapshot published"
        );
        publish.send_replace(Arc::new(snap));
    }
}
