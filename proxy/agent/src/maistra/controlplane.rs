//! ServiceMeshControlPlane reconciler.
//!
//! OSSM runs an operator that turns an SMCP into istiod, gateways and mesh
//! config. This mesh has one control-plane process, the agent, and no operator:
//! the agent already holds the mesh config proxies get, so it is the natural
//! owner of the SMCP too. It watches SMCPs in its root namespace and, for the one
//! in force (the oldest; OSSM allows one per namespace), uses the pure mapping in
//! [`mesh_api::maistra::smcp_map`] to
//! - push the rendered mesh config to its own proxies (access log, outbound
//!   policy, tracing) through the settings channel,
//! - write it into the `mesh-config` ConfigMap (key `mesh`) so mesh-webhook
//!   injects with the SMCP's redirect ranges and ports; the user's own config
//!   is kept under `mesh-base` while an SMCP is in force and restored after,
//! - server-side apply the gateway objects and the mesh-wide PeerAuthentication
//!   (owned by the SMCP, so the garbage collector removes them with it; the
//!   agent also prunes what the SMCP no longer asks for; an object of the same
//!   name it did not create, such as the base install's gateway, is left alone),
//! - write `status`: `Reconciled`, `Ready` (the config is in force and the
//!   gateway Deployments, which it watches, have their replicas available), the
//!   applied and ignored fields.
//!
//! A bad SMCP changes nothing but its status: the last good config stays.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use mesh_api::maistra::smcp::{ServiceMeshControlPlane, SmcpStatus};
use mesh_api::maistra::smcp_map::{self, Owner, OWNER_LABEL};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::compile::Settings;
use crate::config::Config;
use crate::meshfile::{self, MeshFile};

mod writes;

/// The ConfigMap mesh-webhook and the agent mount (manifests/base/kustomization.yaml).
pub const MESH_CONFIGMAP: &str = "mesh-config";
/// Its key holding the mesh config.
pub const MESH_KEY: &str = "mesh";
/// Where the user's own mesh config waits while an SMCP is in force.
pub const BASE_KEY: &str = "mesh-base";
/// Server-side apply field manager of everything this reconciler writes.
pub const FIELD_MANAGER: &str = "mesh-agent-smcp";

/// Objects an SMCP may render: (apiVersion, kind, plural, name). Anything of
/// these carrying [`OWNER_LABEL`] and not rendered any more is pruned.
const RENDERABLE: [(&str, &str, &str); 5] = [
    ("v1", "ServiceAccount", "serviceaccounts"),
    ("apps/v1", "Deployment", "deployments"),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("v1", "Service", "services"),
    (
        "security.istio.io/v1",
        "PeerAuthentication",
        "peerauthentications",
    ),
];
const RENDERABLE_NAMES: [&str; 3] = ["istio-ingressgateway", "istio-egressgateway", "default"];

/// Why one reconcile pass could not finish (retried).
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("rendering the mesh config as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("{kind} without apiVersion/kind/name")]
    Malformed { kind: String },
}

/// The reconciler's inputs and outputs.
pub struct ControlPlane {
    pub client: Client,
    /// Control-plane namespace (the agent's root namespace).
    pub namespace: String,
    /// The agent's flags; the mesh config in force is applied over them.
    pub flags: Config,
    /// The mesh config file as the agent reads it (`None`: no `--mesh-config`).
    pub base: Option<watch::Receiver<Arc<MeshFile>>>,
    /// What the agent pushes to proxies.
    pub settings: watch::Sender<Arc<Settings>>,
    /// Delay before retrying a pass that failed on the API.
    pub retry: Duration,
}

/// What the last passes did, to write only what changed.
#[derive(Default)]
struct State {
    /// Name of the SMCP whose config is in force.
    in_force: Option<String>,
    /// Its gateway Deployments (their availability is its `Ready`).
    deployments: Vec<String>,
}

impl ControlPlane {
    /// Follows SMCPs (and the mesh config file) until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let api: Api<ServiceMeshControlPlane> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut smcps: BTreeMap<String, ServiceMeshControlPlane> = BTreeMap::new();
        let mut listing: Option<BTreeMap<String, ServiceMeshControlPlane>> = None;
        let mut state = State::default();
        let mut base = self.base.take();
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut listed = false;
        // The gateway Deployments' availability makes `Ready`.
        let deps = self.api("apps/v1", "Deployment", "deployments");
        let deps = watcher::watcher(deps, watcher::Config::default()).default_backoff();
        let mut deps = std::pin::pin!(deps);
        loop {
            let mut full = true;
            let base_changed = async {
                match base.as_mut() {
                    Some(b) => b.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = retry => retry_at = None,
                ok = base_changed => if !ok { base = None; continue },
                ev = stream.next() => match ev {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "ServiceMeshControlPlane watch failed; retrying");
                        continue;
                    }
                    Some(Ok(Event::Init)) => { listing = Some(BTreeMap::new()); continue }
                    Some(Ok(Event::InitApply(o))) => {
                        if let Some(l) = listing.as_mut() {
                            l.insert(name_of(&o), o);
                        }
                        continue;
                    }
                    Some(Ok(Event::InitDone)) => {
                        smcps = listing.take().unwrap_or_default();
                        listed = true;
                    }
                    Some(Ok(Event::Apply(o))) => { smcps.insert(name_of(&o), o); }
                    Some(Ok(Event::Delete(o))) => { smcps.remove(&name_of(&o)); }
                },
                ev = deps.next() => match ev {
                    None => return,
                    Some(Ok(Event::Apply(o) | Event::Delete(o))) if owned(&o) => full = false,
                    Some(Ok(Event::InitDone)) => full = false,
                    _ => continue,
                },
            }
            let file = base.as_ref().map(|b| b.borrow().clone());
            if !listed {
                // No SMCP list yet (or no SMCP CRD at all): the mesh file alone
                // is in force, as without this reconciler.
                if let Some(s) = self.file_settings(file.as_deref()) {
                    self.settings.send_if_modified(|cur| replace(cur, s));
                }
                continue;
            }
            if listing.is_some() {
                continue;
            }
            let pass = if full {
                self.reconcile(&smcps, file, &mut state).await
            } else {
                self.refresh_ready(&smcps, &state).await
            };
            if let Err(e) = pass {
                tracing::warn!(error = %e, "ServiceMeshControlPlane reconcile failed; retrying");
                retry_at = Some(tokio::time::Instant::now() + self.retry);
            }
        }
    }

    async fn reconcile(
        &self,
        smcps: &BTreeMap<String, ServiceMeshControlPlane>,
        file: Option<Arc<MeshFile>>,
        state: &mut State,
    ) -> Result<(), ControlPlaneError> {
        // OSSM allows one SMCP per namespace: the oldest wins, the others say so.
        let mut all: Vec<&ServiceMeshControlPlane> = smcps.values().collect();
        all.sort_by_key(|s| (s.metadata.creation_timestamp.clone(), name_of(s)));
        let cms: Api<DynamicObject> = self.api("v1", "ConfigMap", "configmaps");
        let cm = cms.get_opt(MESH_CONFIGMAP).await?;
        let data = |k: &str| {
            cm.as_ref()
                .and_then(|c| c.data["data"][k].as_str().map(String::from))
        };
        let base_text = data(BASE_KEY).or_else(|| data(MESH_KEY));
        // The user's config: `mesh-base` while an SMCP is in force, else `mesh`,
        // else the file the agent was started with.
        let base = match base_text.as_deref().map(meshfile::parse) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "mesh-config ConfigMap unusable; using the mesh config file");
                file.as_deref()
                    .cloned()
                    .unwrap_or_else(|| self.flags_mesh())
            }
            None => file
                .as_deref()
                .cloned()
                .unwrap_or_else(|| self.flags_mesh()),
        };
        let Some(chosen) = all.first() else {
            if state.in_force.take().is_some() || data(BASE_KEY).is_some() {
                self.prune(&[]).await?;
                if let Some(text) = data(BASE_KEY) {
                    self.write_configmap(json!({ MESH_KEY: text })).await?;
                }
            }
            if let Some(s) = self.file_settings(file.as_deref()) {
                self.settings.send_if_modified(|cur| replace(cur, s));
            }
            return Ok(());
        };
        for other in &all[1..] {
            let mut st = other.status.clone().unwrap_or_default();
            let msg = format!(
                "only one ServiceMeshControlPlane per namespace: {} is in force",
                name_of(chosen)
            );
            st.conditions = vec![mesh_api::maistra::smcp::SmcpCondition {
                type_: "Reconciled".into(),
                status: "False".into(),
                reason: "Duplicate".into(),
                message: msg,
                last_transition_time: Some(now()),
            }];
            if other.status.as_ref().map(|s| &s.conditions) != Some(&st.conditions) {
                self.write_status(other, st).await?;
            }
        }
        let owner = Owner {
            name: name_of(chosen),
            namespace: self.namespace.clone(),
            uid: chosen.metadata.uid.clone(),
        };
        let outcome = smcp_map::render(&chosen.spec, &owner, &base.mesh);
        let mut left_alone = Vec::new();
        let mut waiting = Vec::new();
        match &outcome {
            Ok(r) => {
                let mf = MeshFile {
                    mesh: r.mesh.clone(),
                    enable_auto_mtls: base.enable_auto_mtls,
                    ignored: base.ignored.clone(),
                };
                if let Some(s) = checked(self.flags.with_mesh(&mf)) {
                    self.settings.send_if_modified(|cur| replace(cur, s));
                }
                let text = render_mesh(&mf)?;
                // No ConfigMap yet: the config the agent started with is the base.
                let base_text = match base_text {
                    Some(t) => t,
                    None => render_mesh(&base)?,
                };
                if data(MESH_KEY).as_deref() != Some(text.as_str())
                    || data(BASE_KEY).as_deref() != Some(base_text.as_str())
                {
                    self.write_configmap(json!({ MESH_KEY: text, BASE_KEY: base_text }))
                        .await?;
                }
                for obj in &r.objects {
                    if let Some(theirs) = self.apply(obj).await? {
                        left_alone.push(theirs);
                    }
                }
                self.prune(&r.objects).await?;
                state.in_force = Some(owner.name.clone());
                state.deployments = r
                    .objects
                    .iter()
                    .filter(|o| o["kind"] == "Deployment")
                    .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
                    .collect();
                waiting = self.waiting(&state.deployments).await?;
            }
            Err(e) => {
                tracing::warn!(smcp = %owner.name, error = %e, "ServiceMeshControlPlane rejected; keeping the last good config")
            }
        }
        let prev = chosen.status.as_ref();
        let mut st = smcp_map::status(prev, &outcome, &waiting, chosen.metadata.generation, &now());
        if !left_alone.is_empty() {
            if let Some(c) = st.conditions.iter_mut().find(|c| c.type_ == "Reconciled") {
                c.message.push_str(&format!(
                    "; left as they are (they exist and were not created by a ServiceMeshControlPlane): {}",
                    left_alone.join(", ")
                ));
            }
        }
        // Our own status write comes back as an event: write only a change.
        if prev.is_some_and(|p| same_but_time(p, &st)) {
            return Ok(());
        }
        self.write_status(chosen, st).await
    }

    /// A gateway Deployment changed: rewrites the in-force SMCP's `Ready`.
    async fn refresh_ready(
        &self,
        smcps: &BTreeMap<String, ServiceMeshControlPlane>,
        state: &State,
    ) -> Result<(), ControlPlaneError> {
        let Some(smcp) = state.in_force.as_ref().and_then(|n| smcps.get(n)) else {
            return Ok(());
        };
        // The first full pass writes the status; until then there is no Ready.
        let Some(prev) = smcp.status.as_ref() else {
            return Ok(());
        };
        let waiting = self.waiting(&state.deployments).await?;
        let mut st = prev.clone();
        smcp_map::set_ready(&mut st, smcp_map::ready(&waiting, &now()));
        if same_but_time(prev, &st) {
            return Ok(());
        }
        self.write_status(smcp, st).await
    }

    /// The settings without an SMCP: the flags with the mesh file over them.
    fn file_settings(&self, file: Option<&MeshFile>) -> Option<Settings> {
        match file {
            Some(f) => checked(self.flags.with_mesh(f)),
            None => Some(self.flags.settings()),
        }
    }

    /// The mesh config the flags describe, for an agent without a mesh file.
    fn flags_mesh(&self) -> MeshFile {
        let mut m = MeshFile::default();
        m.mesh.trust_domain = self.flags.trust_domain.clone();
        m.mesh.root_namespace = self.namespace.clone();
        m
    }
}

/// The settings of `next` when the agent accepts them (as a mesh file edit is
/// checked); `None` keeps the last good ones.
fn checked(next: Config) -> Option<Settings> {
    let mut check = next.clone();
    check.mesh_config = None;
    match check.validate() {
        Ok(()) => Some(next.settings()),
        Err(e) => {
            tracing::warn!(error = %e, "mesh config edit rejected; keeping the last good config");
            None
        }
    }
}

fn name_of(s: &ServiceMeshControlPlane) -> String {
    s.metadata.name.clone().unwrap_or_default()
}

fn replace(cur: &mut Arc<Settings>, next: Settings) -> bool {
    if **cur == next {
        return false;
    }
    *cur = Arc::new(next);
    true
}

fn same_but_time(a: &SmcpStatus, b: &SmcpStatus) -> bool {
    let strip = |s: &SmcpStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// RFC 3339 UTC time, as Kubernetes writes condition times.
pub(crate) fn now() -> String {
    let t = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The mesh config as the `mesh` key holds it: what [`meshfile::parse`] reads.
pub fn render_mesh(m: &MeshFile) -> Result<String, serde_yaml_ng::Error> {
    let mut v = serde_json::to_value(&m.mesh)
        .map_err(<serde_yaml_ng::Error as serde::ser::Error>::custom)?;
    v["enableAutoMtls"] = Value::Bool(m.enable_auto_mtls);
    Ok(format!(
        "# Rendered by mesh-agent from the ServiceMeshControlPlane over `{BASE_KEY}`.\n{}",
        serde_yaml_ng::to_string(&v)?
    ))
}

/// Whether a ServiceMeshControlPlane reconcile created `o` (its owner label).
fn owned(o: &DynamicObject) -> bool {
    o.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(OWNER_LABEL))
}
