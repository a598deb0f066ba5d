//! Root bundle publication, following the CA in force: a file in local/files
//! mode (`--ca-root-out`, what `istio-ca-root-cert` is mounted as), and in
//! Kubernetes the ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in every
//! namespace, as istiod's namespace controller does: created in each namespace
//! as it appears, updated in all of them when the bundle changes.

use super::Ca;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The ConfigMap Istio publishes its root bundle as, in every namespace.
pub const CONFIGMAP: &str = "istio-ca-root-cert";
/// Its data key (also the file name proxies read).
pub const KEY: &str = "root-cert.pem";

fn bundle(ca: &Ca) -> String {
    ca.roots().concat()
}

/// Rewrites `path` whenever the root bundle changes.
pub async fn file(path: PathBuf, mut cas: watch::Receiver<Arc<Ca>>, shutdown: CancellationToken) {
    let mut written = bundle(&cas.borrow_and_update());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = cas.changed() => if r.is_err() { return },
        }
        let ca = cas.borrow_and_update().clone();
        if bundle(&ca) == written {
            continue;
        }
        match ca.publish(&path) {
            Ok(()) => {
                written = bundle(&ca);
                tracing::info!(path = %path.display(), roots = ca.roots().len(), "root bundle published");
            }
            Err(e) => tracing::warn!(error = %e, "root bundle not published"),
        }
    }
}

/// Keeps `istio-ca-root-cert` in every namespace equal to the root bundle.
/// Namespaces come from a watch; failed writes are retried every `retry`.
pub async fn configmaps(
    client: kube::Client,
    mut cas: watch::Receiver<Arc<Ca>>,
    retry: Duration,
    shutdown: CancellationToken,
) {
    use futures::StreamExt;
    use kube::runtime::watcher::{self, Event};
    let namespaces = kube::Api::<Namespace>::all(client.clone());
    let mut events = std::pin::pin!(watcher::watcher(namespaces, watcher::Config::default()));
    // Namespace -> the bundle its ConfigMap holds (as far as we wrote it).
    let mut known: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut current = bundle(&cas.borrow_and_update());
    let mut tick = tokio::time::interval(retry);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = cas.changed() => {
                if r.is_err() { return }
                current = bundle(&cas.borrow_and_update());
            }
            ev = events.next() => match ev {
                Some(Ok(Event::Apply(ns) | Event::InitApply(ns))) => {
                    if let Some(name) = usable(&ns) {
                        known.entry(name).or_insert(None);
                    }
                }
                Some(Ok(Event::Delete(ns))) => {
                    if let Some(name) = ns.metadata.name {
                        known.remove(&name);
                    }
                }
                Some(Ok(Event::Init | Event::InitDone)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "namespace watch failed; retrying");
                    tokio::time::sleep(retry).await;
                }
                None => return,
            },
            _ = tick.tick() => {}
        }
        let stale: BTreeSet<String> = known
            .iter()
            .filter(|(_, b)| b.as_deref() != Some(current.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        for ns in stale {
            match apply(&client, &ns, &current).await {
                Ok(()) => {
                    tracing::info!(namespace = %ns, "{CONFIGMAP} published");
                    known.insert(ns, Some(current.clone()));
                }
                Err(e) => tracing::warn!(namespace = %ns, error = %e,
                    "{CONFIGMAP} not published; will retry"),
            }
        }
    }
}

/// The namespace's name, unless it is going away.
fn usable(ns: &Namespace) -> Option<String> {
    let terminating = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    (!terminating).then(|| ns.metadata.name.clone()).flatten()
}

/// Server-side apply: creates the ConfigMap or updates its bundle.
async fn apply(client: &kube::Client, ns: &str, bundle: &str) -> Result<(), kube::Error> {
    let api = kube::Api::<ConfigMap>::namespaced(client.clone(), ns);
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP,
            "namespace": ns,
            "labels": {"istio.io/config": "true"},
        },
        "data": {KEY: bundle},
    });
    let pp = kube::api::PatchParams::apply("mesh-agent").force();
    api.patch(CONFIGMAP, &pp, &kube::api::Patch::Apply(&cm))
        .await
        .map(|_| ())
}
