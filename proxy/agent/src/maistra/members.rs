//! ServiceMeshMemberRoll / ServiceMeshMember reconciler: a thin shell over
//! [`mesh_api::maistra::membership::plan`]. It follows the roll in the
//! control-plane namespace, every ServiceMeshMember, the Namespaces and the
//! NetworkPolicies labelled member of this control plane; after each burst of
//! changes it computes the plan and applies what differs: namespace labels
//! (merge patches), NetworkPolicies (create/replace/delete), the statuses, and
//! the member scope the compiler restricts the mesh to ([`scoped_settings`]).
//! A failed write is logged and retried on the next pass (at most a second later).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use mesh_api::maistra::member::{
    ServiceMeshMember, ServiceMeshMemberRoll, ServiceMeshMemberRollSpec, DEFAULT_NAME,
    MEMBER_OF_LABEL,
};
use mesh_api::maistra::membership::{
    plan, stamp_roll, stamp_transitions, NamespaceInfo, Plan, PlanInput,
};
use mesh_api::maistra::smcp::ServiceMeshControlPlane;
use serde_json::json;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::compile::Settings;

/// The member scope: `None` while not multitenant (every namespace is served).
pub type Scope = Option<Arc<BTreeSet<String>>>;

/// Which control plane this agent is, as OSSM names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersConfig {
    /// Where the roll lives (the agent's root namespace).
    pub control_plane_namespace: String,
    /// The ServiceMeshControlPlane's name (NetworkPolicy names, member refs)
    /// while no SMCP exists in the namespace; the SMCP in force wins.
    pub smcp_name: String,
    /// Likewise `spec.security.manageNetworkPolicy` (OSSM default: true).
    pub manage_network_policy: bool,
}

/// One write that failed (logged; the next pass retries it).
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error("{what} {namespace}/{name}: {source}")]
    Write {
        what: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// Follows `store`'s kind with a reflector; every change wakes `notify`.
fn follow<K>(api: Api<K>, notify: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!(kind = K::kind(&Default::default()).as_ref(), error = %e,
                    "membership watch failed; retrying with backoff");
                continue;
            }
            notify.notify_one();
        }
    });
    (reader, task)
}

/// Runs until `shutdown`, publishing the member scope on `scope`.
pub async fn run(
    client: Client,
    cfg: MembersConfig,
    scope: watch::Sender<Scope>,
    shutdown: CancellationToken,
) {
    let notify = Arc::new(Notify::new());
    let cp = cfg.control_plane_namespace.clone();
    let (rolls, t1) = follow(
        Api::<ServiceMeshMemberRoll>::namespaced(client.clone(), &cp),
        notify.clone(),
    );
    let (members, t2) = follow(
        Api::<ServiceMeshMember>::all(client.clone()),
        notify.clone(),
    );
    let (namespaces, t3) = follow(Api::<Namespace>::all(client.clone()), notify.clone());
    let (policies, t4) = follow(Api::<NetworkPolicy>::all(client.clone()), notify.clone());
    let (smcps, t5) = follow(
        Api::<ServiceMeshControlPlane>::namespaced(client.clone(), &cp),
        notify.clone(),
    );
    let tasks = [t1, t2, t3, t4, t5];
    let ready = async {
        let _ = tokio::join!(
            rolls.wait_until_ready(),
            members.wait_until_ready(),
            namespaces.wait_until_ready(),
            policies.wait_until_ready(),
            // Without the SMCP CRD this list never syncs: plan with the flags.
            tokio::time::timeout(Duration::from_secs(5), smcps.wait_until_ready())
        );
    };
    tokio::select! {
        _ = shutdown.cancelled() => { tasks.iter().for_each(|t| t.abort()); return }
        _ = ready => {}
    }
    let mut last_good: Option<ServiceMeshMemberRollSpec> = None;
    let mut first = true;
    loop {
        // Coalesce a burst (our own writes come back as events too).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let roll = rolls
            .state()
            .into_iter()
            .find(|r| r.metadata.name.as_deref() == Some(DEFAULT_NAME));
        let smms: Vec<ServiceMeshMember> = members.state().iter().map(|m| (**m).clone()).collect();
        let nss: Vec<NamespaceInfo> = namespaces.state().iter().map(|n| info(n)).collect();
        let owned: Vec<NetworkPolicy> = policies
            .state()
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MEMBER_OF_LABEL))
                    == Some(&cp)
            })
            .map(|p| (**p).clone())
            .collect();
        let smcp = in_force(&smcps.state());
        let (smcp_name, manage_network_policy) = match &smcp {
            Some(s) => (
                s.metadata.name.clone().unwrap_or_default(),
                manages_network_policy(s),
            ),
            None => (cfg.smcp_name.clone(), cfg.manage_network_policy),
        };
        let p = plan(&PlanInput {
            control_plane_namespace: &cp,
            smcp_name: &smcp_name,
            manage_network_policy,
            roll: roll.as_deref(),
            last_good: last_good.as_ref(),
            members: &smms,
            namespaces: &nss,
            owned_policies: &owned,
        });
        if p.spec_in_force.is_some() {
            last_good = p.spec_in_force.clone();
        }
        let next: Scope = p.scope.clone().map(Arc::new);
        // The first plan is always announced: [`start`] waits for it.
        scope.send_if_modified(|cur| {
            let differs = first || *cur != next;
            if differs {
                tracing::info!(members = ?next, "mesh member namespaces");
                *cur = next.clone();
            }
            differs
        });
        first = false;
        let failures = apply(&client, &cp, &p, roll.as_deref(), &smms).await;
        for e in &failures {
            tracing::warn!(error = %e, "membership write failed; retrying");
        }
        let retry = if failures.is_empty() {
            Duration::MAX
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = notify.notified() => {}
            _ = tokio::time::sleep(retry.min(Duration::from_secs(3600))) => {}
        }
    }
    tasks.iter().for_each(|t| t.abort());
}

/// The ServiceMeshControlPlane in force in the control-plane namespace: the
/// oldest, as the control-plane reconciler picks it (OSSM allows one).
fn in_force(smcps: &[Arc<ServiceMeshControlPlane>]) -> Option<Arc<ServiceMeshControlPlane>> {
    smcps
        .iter()
        .min_by_key(|s| {
            (
                s.metadata.creation_timestamp.clone(),
                s.metadata.name.clone(),
            )
        })
        .cloned()
}

/// `spec.security.manageNetworkPolicy`, on unless set to false (OSSM's default).
fn manages_network_policy(s: &ServiceMeshControlPlane) -> bool {
    s.spec
        .security
        .as_ref()
        .and_then(|sec| sec.manage_network_policy)
        .unwrap_or(true)
}

fn info(n: &Namespace) -> NamespaceInfo {
    NamespaceInfo {
        name: n.metadata.name.clone().unwrap_or_default(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        terminating: n.metadata.deletion_timestamp.is_some(),
    }
}

/// Writes what the plan says differs; returns the writes that failed.
async fn apply(
    client: &Client,
    cp: &str,
    p: &Plan,
    roll: Option<&ServiceMeshMemberRoll>,
    smms: &[ServiceMeshMember],
) -> Vec<MembersError> {
    let mut failed = Vec::new();
    let err = |what, namespace: &str, name: &str| {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        move |source| MembersError::Write {
            what,
            namespace,
            name,
            source,
        }
    };
    let nss = Api::<Namespace>::all(client.clone());
    let pp = PatchParams::default();
    for ns in &p.label {
        let patch = json!({"metadata": {"labels": {MEMBER_OF_LABEL: cp}}});
        if let Err(e) = nss.patch(ns, &pp, &Patch::Merge(patch)).await {
            failed.push(err("labelling namespace", "", ns)(e));
        }
    }
    for ns in &p.unlabel {
        let patch = json!({"metadata": {"labels": {MEMBER_OF_LABEL: null}}});
        if let Err(e) = nss.patch(ns, &pp, &Patch::Merge(patch)).await {
            failed.push(err("unlabelling namespace", "", ns)(e));
        }
    }
    for np in &p.ensure_policies {
        let (ns, name) = (
            np.metadata.namespace.clone().unwrap_or_default(),
            np.metadata.name.clone().unwrap_or_default(),
        );
        if let Err(e) = ensure_policy(client, np).await {
            failed.push(err("writing NetworkPolicy", &ns, &name)(e));
        }
    }
    for (ns, name) in &p.delete_policies {
        let api = Api::<NetworkPolicy>::namespaced(client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => failed.push(err("deleting NetworkPolicy", ns, name)(e)),
        }
    }
    let now = now();
    if let (Some(roll), Some(status)) = (roll, &p.roll_status) {
        let mut status = status.clone();
        stamp_roll(roll.status.as_ref(), &mut status, &now);
        if roll.status.as_ref() != Some(&status) {
            let api = Api::<ServiceMeshMemberRoll>::namespaced(client.clone(), cp);
            let patch = Patch::Merge(json!({"status": status}));
            if let Err(e) = api.patch_status(DEFAULT_NAME, &pp, &patch).await {
                failed.push(err("status of ServiceMeshMemberRoll", cp, DEFAULT_NAME)(e));
            }
        }
    }
    for ((ns, name), status) in &p.member_statuses {
        let cur = smms
            .iter()
            .find(|m| {
                m.metadata.namespace.as_deref() == Some(ns)
                    && m.metadata.name.as_deref() == Some(name)
            })
            .and_then(|m| m.status.as_ref());
        let mut status = status.clone();
        let before = cur.map(|c| c.conditions.as_slice()).unwrap_or_default();
        stamp_transitions(before, &mut status.conditions, &now);
        if cur == Some(&status) {
            continue;
        }
        let api = Api::<ServiceMeshMember>::namespaced(client.clone(), ns);
        let patch = Patch::Merge(json!({"status": status}));
        if let Err(e) = api.patch_status(name, &pp, &patch).await {
            failed.push(err("status of ServiceMeshMember", ns, name)(e));
        }
    }
    failed
}

/// The API server's time format (RFC 3339, seconds).
fn now() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    let t = k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or(t);
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t))
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Creates the NetworkPolicy, or replaces the one of that name.
async fn ensure_policy(client: &Client, np: &NetworkPolicy) -> Result<(), kube::Error> {
    let ns = np.metadata.namespace.as_deref().unwrap_or_default();
    let name = np.metadata.name.as_deref().unwrap_or_default();
    let api = Api::<NetworkPolicy>::namespaced(client.clone(), ns);
    match api.create(&PostParams::default(), np).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let cur = api.get(name).await?;
            let mut next = np.clone();
            next.metadata.resource_version = cur.metadata.resource_version;
            api.replace(name, &PostParams::default(), &next)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// How long [`start`] waits for the first membership plan.
pub const FIRST_PLAN_WAIT: Duration = Duration::from_secs(30);

/// Starts the reconciler; returns `settings` restricted to the member scope.
/// It waits (at most [`FIRST_PLAN_WAIT`]) for the first plan, so the agent
/// never serves a non-member what a multitenant mesh hides, nor members an
/// empty mesh. Until then, and if that wait runs out (say the maistra.io CRDs
/// are not installed), only the control-plane namespace is served: closed,
/// not open.
pub async fn start(
    client: Client,
    cfg: MembersConfig,
    settings: watch::Receiver<Arc<Settings>>,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<Settings>> {
    let closed = BTreeSet::from([cfg.control_plane_namespace.clone()]);
    let (scope_tx, mut scope_rx) = watch::channel(Some(Arc::new(closed)));
    tokio::spawn(run(client, cfg, scope_tx, shutdown.clone()));
    if tokio::time::timeout(FIRST_PLAN_WAIT, scope_rx.changed())
        .await
        .is_err()
    {
        tracing::error!(
            wait = ?FIRST_PLAN_WAIT,
            "no membership plan yet (are the maistra.io CRDs installed and readable?); \
             serving only the control-plane namespace until there is one"
        );
    }
    scoped_settings(settings, scope_rx, shutdown)
}

/// Settings that follow both the mesh settings and the member scope: each
/// change of either publishes the settings with `members` set to the scope.
pub fn scoped_settings(
    mut settings: watch::Receiver<Arc<Settings>>,
    mut scope: watch::Receiver<Scope>,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<Settings>> {
    let merge = |s: &Arc<Settings>, m: &Scope| {
        Arc::new(Settings {
            members: m.clone(),
            ..(**s).clone()
        })
    };
    let first = merge(&settings.borrow_and_update(), &scope.borrow_and_update());
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = settings.changed() => if r.is_err() { return },
                r = scope.changed() => if r.is_err() { return },
            }
            let next = merge(&settings.borrow_and_update(), &scope.borrow_and_update());
            tx.send_replace(next);
        }
    });
    rx
}
