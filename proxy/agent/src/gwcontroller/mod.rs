//! Kubernetes Gateway API controller, the I/O around the translation (which
//! lives in `crate::gatewayapi` and fills `Snapshot::gateway_api_status`):
//!
//! - the deployer follows Gateways and GatewayClasses; it makes sure the
//!   GatewayClasses `istio` and `mesh` exist (created when missing, a user's
//!   never overwritten) and reports them `Accepted`, server-side applies the
//!   `<gateway>-<class>` ServiceAccount, Deployment and Service of every
//!   Gateway of those classes ([`mesh_api::gatewayapi::deploy`]), and deletes
//!   what a deleted or re-classed Gateway owned (ownerReferences let a real
//!   cluster's garbage collector do it too; deleting explicitly covers clusters
//!   and test servers without one); a generated object someone else deletes
//!   is made again;
//! - the status writer follows the agent's published snapshots and PATCHes the
//!   `status` subresource of every object whose computed status changed since
//!   it last wrote it, keeping the `lastTransitionTime` of conditions whose
//!   status did not change.
//!
//! Failures (an object gone, a conflict, the API down) are logged and retried
//! after `retry`; nothing here stops the agent.

pub mod plan;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use mesh_api::gatewayapi::deploy::{self, MANAGED_LABEL, MANAGED_VALUE};
use mesh_api::gatewayapi::{GatewayApiResource, GatewayClass, GROUP};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::compile::Snapshot;

/// Server-side apply field manager of the generated objects.
pub const FIELD_MANAGER: &str = "mesh-agent-gateway-api";

/// Why a pass could not finish (retried).
#[derive(Debug, thiserror::Error)]
pub enum GwControllerError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {namespace}/{name} does not exist (any more)")]
    Gone {
        kind: String,
        namespace: String,
        name: String,
    },
}

/// The controller: a Kubernetes client and the retry delay after a failure.
pub struct GatewayController {
    pub client: Client,
    pub retry: Duration,
}

/// Objects of one watched kind by (namespace, name), with the list in progress.
#[derive(Default)]
struct Watched {
    objects: BTreeMap<(String, String), Value>,
    listing: Option<BTreeMap<(String, String), Value>>,
    listed: bool,
}

impl Watched {
    /// Applies one watch event; true when the set is complete and changed.
    fn event(&mut self, ev: Event<DynamicObject>) -> bool {
        let key = |o: &DynamicObject| {
            (
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
            )
        };
        let val = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
        match ev {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                if let Some(l) = self.listing.as_mut() {
                    l.insert(key(&o), val(&o));
                }
                false
            }
            Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.listed = true;
                true
            }
            Event::Apply(o) => {
                self.objects.insert(key(&o), val(&o));
                self.listed
            }
            Event::Delete(o) => {
                self.objects.remove(&key(&o));
                self.listed
            }
        }
    }
}

impl GatewayController {
    /// Starts the deployer and the status writer until `shutdown`.
    pub fn start(
        self,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let me = Arc::new(self);
        vec![
            tokio::spawn(me.clone().run_deployer(shutdown.clone())),
            tokio::spawn(me.run_status(snapshots, shutdown)),
        ]
    }

    fn api(
        &self,
        api_version: &str,
        kind: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> Api<DynamicObject> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Follows Gateways and GatewayClasses and reconciles on every change.
    async fn run_deployer(self: Arc<Self>, shutdown: CancellationToken) {
        let version = |k| mesh_api::gatewayapi::versions(k).and_then(|v| v.first().copied());
        let av = |k| format!("{GROUP}/{}", version(k).unwrap_or("v1"));
        let gws = self.api(&av("Gateway"), "Gateway", "gateways", None);
        let classes = self.api(&av("GatewayClass"), "GatewayClass", "gatewayclasses", None);
        let gws = watcher::watcher(gws, watcher::Config::default()).default_backoff();
        let classes = watcher::watcher(classes, watcher::Config::default()).default_backoff();
        let (mut gws, mut classes) = (std::pin::pin!(gws), std::pin::pin!(classes));
        // A generated object deleted by someone else is made again, as Istio's
        // controller does: the deletions of managed objects trigger a pass.
        let managed =
            watcher::Config::default().labels(&format!("{MANAGED_LABEL}={MANAGED_VALUE}"));
        let generated = futures::stream::select_all(plan::DEPLOYED.map(|(av, kind, plural)| {
            watcher::watcher(self.api(av, kind, plural, None), managed.clone())
                .default_backoff()
                .map(move |ev| match ev {
                    Ok(Event::Delete(o)) => {
                        let mut v = serde_json::to_value(&o).unwrap_or_default();
                        v["kind"] = json!(kind);
                        plan::managed(&v)
                    }
                    _ => false,
                })
                .boxed()
        }));
        let mut generated = std::pin::pin!(generated);
        let (mut g, mut c) = (Watched::default(), Watched::default());
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let changed = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = retry => { retry_at = None; true }
                ev = gws.next() => match ev {
                    None => return,
                    Some(Ok(ev)) => g.event(ev),
                    Some(Err(e)) => { tracing::warn!(error = %e, "Gateway watch failed; retrying"); false }
                },
                ev = classes.next() => match ev {
                    None => return,
                    Some(Ok(ev)) => c.event(ev),
                    Some(Err(e)) => { tracing::warn!(error = %e, "GatewayClass watch failed; retrying"); false }
                },
                ev = generated.next() => match ev {
                    None => return,
                    Some(deleted) => deleted,
                },
            };
            if !changed || !g.listed || !c.listed {
                continue;
            }
            if let Err(e) = self.reconcile(&g.objects, &c.objects).await {
                tracing::warn!(error = %e, "Gateway API deployment pass failed; retrying");
                retry_at = Some(tokio::time::Instant::now() + self.retry);
            }
        }
    }

    /// One pass: classes, their status, the generated objects, the leftovers.
    async fn reconcile(
        &self,
        gateways: &BTreeMap<(String, String), Value>,
        classes: &BTreeMap<(String, String), Value>,
    ) -> Result<(), GwControllerError> {
        let class_api = self.api(
            &format!("{GROUP}/v1"),
            "GatewayClass",
            "gatewayclasses",
            None,
        );
        for class in deploy::default_classes() {
            let name = class.metadata.name.clone().unwrap_or_default();
            if classes.contains_key(&(String::new(), name.clone())) {
                continue;
            }
            let obj: DynamicObject =
                serde_json::from_value(serde_json::to_value(&class).unwrap_or_default())
                    .map_err(kube::Error::SerdeError)?;
            match class_api.create(&PostParams::default(), &obj).await {
                Ok(_) => tracing::info!(class = %name, "GatewayClass created"),
                // Someone made it meanwhile: theirs stands.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A status that cannot be written does not hold up deployment: the
        // pass goes on and reports it at the end (retried).
        let mut failed = None;
        let now = crate::maistra::controlplane::now();
        for ((_, name), class) in classes {
            if let Some(st) = plan::class_status(class, &now) {
                if let Err(e) = self
                    .patch_status(&class_api, name, &class["status"], st)
                    .await
                {
                    failed = Some(e);
                }
            }
        }
        let typed_classes: BTreeMap<String, GatewayClass> = classes
            .values()
            .filter_map(|v| match mesh_api::gatewayapi::parse(v) {
                Ok(Some(GatewayApiResource::GatewayClass(c))) => {
                    Some((c.metadata.name.clone().unwrap_or_default(), *c))
                }
                _ => None,
            })
            .collect();
        let typed_gws: Vec<_> = gateways
            .values()
            .filter_map(|v| match mesh_api::gatewayapi::parse(v) {
                Ok(Some(GatewayApiResource::Gateway(g))) => Some(*g),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "Gateway not deployed");
                    None
                }
            })
            .collect();
        let (want, errors) = plan::desired(&typed_gws, &typed_classes);
        for e in errors {
            tracing::warn!(error = %e, "Gateway not deployed");
        }
        for obj in &want {
            self.apply(obj).await?;
        }
        let mut existing = Vec::new();
        let managed = ListParams::default().labels(&format!("{MANAGED_LABEL}={MANAGED_VALUE}"));
        for (av, kind, plural) in plan::DEPLOYED {
            let list = self.api(av, kind, plural, None).list(&managed).await?;
            existing.extend(list.items.iter().map(|o| {
                let mut v = serde_json::to_value(o).unwrap_or_default();
                v["kind"] = json!(kind);
                v
            }));
        }
        for (kind, ns, name) in plan::leftovers(&existing, &want) {
            let Some((av, _, plural)) = plan::DEPLOYED.iter().find(|d| d.1 == kind) else {
                continue;
            };
            match self
                .api(av, &kind, plural, Some(&ns))
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => tracing::info!(%kind, %ns, %name, "deleted: its Gateway is gone"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Server-side applies a generated object, unless an object of that name
    /// exists that the controller did not make (left alone, with a warning).
    async fn apply(&self, obj: &Value) -> Result<(), GwControllerError> {
        let (kind, ns, name) = plan::object_ref(obj);
        let Some((av, _, plural)) = plan::DEPLOYED.iter().find(|d| d.1 == kind) else {
            return Ok(());
        };
        let api = self.api(av, &kind, plural, Some(&ns));
        if let Some(cur) = api.get_opt(&name).await? {
            let mut cur = serde_json::to_value(&cur).unwrap_or_default();
            cur["kind"] = json!(kind);
            if !plan::managed(&cur) {
                tracing::warn!(%kind, %ns, %name, "exists and was not created for a Gateway: left alone");
                return Ok(());
            }
        }
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?;
        Ok(())
    }

    /// Merge-patches `status` to `next`, removing top-level fields `cur` has
    /// and `next` lacks (a merge patch keeps what it does not name).
    async fn patch_status(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        cur: &Value,
        next: Value,
    ) -> Result<(), GwControllerError> {
        let mut body = next;
        if let (Some(c), Some(b)) = (cur.as_object(), body.as_object_mut()) {
            for k in c.keys() {
                b.entry(k.clone()).or_insert(Value::Null);
            }
        }
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": body })),
        )
        .await?;
        Ok(())
    }
}
