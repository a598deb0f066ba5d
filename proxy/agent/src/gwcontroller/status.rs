//! The status writer: follows the agent's published snapshots and writes every
//! Gateway API object's computed `status` that changed since it last wrote it.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_api::resource::ResourceKey;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{plan, GatewayController, GwControllerError};
use crate::compile::Snapshot;

impl GatewayController {
    pub(super) async fn run_status(
        self: Arc<Self>,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) {
        // What was last written per object (as computed, before time stamps).
        let mut written: BTreeMap<ResourceKey, Value> = BTreeMap::new();
        // The statuses last written in full: an endpoint change shares them
        // with the snapshot before, and then nothing needs comparing.
        let mut done: Option<Arc<BTreeMap<ResourceKey, Value>>> = None;
        loop {
            let snap = snapshots.borrow_and_update().clone();
            let statuses = &snap.gateway_api_status;
            let mut failed = false;
            if !done.as_ref().is_some_and(|d| Arc::ptr_eq(d, statuses)) {
                // A vanished object is forgotten: written again if it comes back.
                written.retain(|k, _| statuses.contains_key(k));
                for (key, st) in statuses.iter() {
                    if written.get(key) == Some(st) {
                        continue;
                    }
                    match self.write(key, st).await {
                        Ok(()) => {
                            written.insert(key.clone(), st.clone());
                        }
                        Err(e) => {
                            tracing::warn!(object = %key, error = %e, "Gateway API status not written; retrying");
                            failed = true;
                        }
                    }
                }
                done = (!failed).then(|| statuses.clone());
            }
            let retry_at = failed.then(|| tokio::time::Instant::now() + self.retry);
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = retry => {}
                r = snapshots.changed() => if r.is_err() { return },
            }
        }
    }

    /// Writes one object's status, keeping unchanged conditions' times.
    async fn write(&self, key: &ResourceKey, st: &Value) -> Result<(), GwControllerError> {
        let Some((av, plural, namespaced)) = plan::status_target(key) else {
            return Ok(());
        };
        let kind = av_kind(key);
        let api = self.api(
            &av,
            kind,
            plural,
            namespaced.then_some(key.namespace.as_str()),
        );
        let Some(cur) = api.get_opt(&key.name).await? else {
            return Err(GwControllerError::Gone {
                kind: key.kind.clone(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            });
        };
        let cur = serde_json::to_value(&cur).unwrap_or_default();
        let st = plan::keep_foreign_parents(&cur["status"], st);
        let next = plan::stamp(&cur["status"], &st, &crate::maistra::controlplane::now());
        if cur["status"] == next {
            return Ok(());
        }
        self.patch_status(&api, &key.name, &cur["status"], next)
            .await
    }
}

/// The Kubernetes kind of a store key (the Gateway's key kind is qualified).
fn av_kind(key: &ResourceKey) -> &str {
    if key.kind == mesh_api::gatewayapi::GATEWAY_KEY_KIND {
        "Gateway"
    } else {
        &key.kind
    }
}
