//! The `kubernetes` source: kube-rs watchers on the same kinds as the files source.
//! Each object is its own origin (`Kind/namespace/name`), so an update replaces
//! exactly that object. A (re)list — at start, or after the watch expired with
//! `410 Gone` — is reconciled against what the store held: objects missing from the
//! fresh list are removed, unchanged ones cause no change (the store ignores equal
//! objects), so a dropped watch leaves no gap and no duplicate. Errors back off
//! (kube's default backoff) and the watch resumes. Metadata is trimmed on arrival
//! (managed fields, last-applied annotations) by [`crate::objects`].
//!
//! Once every kind's first list is in, the source says [`SourceEvent::Synced`]
//! (the agent publishes nothing before). A kind the API server does not serve
//! (`404`: its CRD is not installed) or lets the agent read (`403`) counts as
//! an empty list; any other failure keeps the agent waiting, and saying so.

use super::{Source, SourceError, SourceEvent};
use crate::objects::KubeObject;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use mesh_api::gatewayapi;
use serde::Serialize;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// Watches a cluster through `client`.
pub struct KubernetesSource {
    pub client: Client,
}

impl KubernetesSource {
    /// Uses in-cluster config or the local kubeconfig.
    pub async fn from_env() -> Result<Self, SourceError> {
        let client = Client::try_default()
            .await
            .map_err(|e| SourceError::Kube(e.to_string()))?;
        Ok(KubernetesSource { client })
    }
}

/// The Istio kinds, watched as dynamic objects at their storage version.
const ISTIO: [(&str, &str, &str); 8] = [
    ("networking.istio.io", "VirtualService", "virtualservices"),
    ("networking.istio.io", "DestinationRule", "destinationrules"),
    ("networking.istio.io", "Gateway", "gateways"),
    ("networking.istio.io", "ServiceEntry", "serviceentries"),
    ("networking.istio.io", "Sidecar", "sidecars"),
    (
        "security.istio.io",
        "PeerAuthentication",
        "peerauthentications",
    ),
    (
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    ("telemetry.istio.io", "Telemetry", "telemetries"),
];

/// The Gateway API kinds (`gateway.networking.k8s.io`), watched as dynamic objects
/// at the version [`gatewayapi::versions`] lists first (v1; v1beta1 for
/// ReferenceGrant; v1alpha2 for TLSRoute/TCPRoute). GatewayClass is cluster-scoped.
/// Clusters without these CRDs keep working: the watch fails, logs once and
/// retries with backoff while every other kind is followed.
const GATEWAY_API: [(&str, &str); 7] = [
    ("GatewayClass", "gatewayclasses"),
    ("Gateway", "gateways"),
    ("HTTPRoute", "httproutes"),
    ("GRPCRoute", "grpcroutes"),
    ("TLSRoute", "tlsroutes"),
    ("TCPRoute", "tcproutes"),
    ("ReferenceGrant", "referencegrants"),
];

impl Source for KubernetesSource {
    fn run(
        self: Box<Self>,
        events: UnboundedSender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>> {
        Box::pin(async move {
            let c = &self.client;
            let pending = Pending::new(events.clone());
            let mut tasks = tokio::task::JoinSet::new();
            tasks.spawn(follow(
                "Namespace",
                Api::<Namespace>::all(c.clone()),
                None,
                events.clone(),
                pending.clone(),
            ));
            tasks.spawn(follow(
                "Service",
                Api::<Service>::all(c.clone()),
                None,
                events.clone(),
                pending.clone(),
            ));
            tasks.spawn(follow(
                "EndpointSlice",
                Api::<EndpointSlice>::all(c.clone()),
                None,
                events.clone(),
                pending.clone(),
            ));
            tasks.spawn(follow(
                "Pod",
                Api::<Pod>::all(c.clone()),
                None,
                events.clone(),
                pending.clone(),
            ));
            tasks.spawn(follow(
                "ServiceAccount",
                Api::<ServiceAccount>::all(c.clone()),
                None,
                events.clone(),
                pending.clone(),
            ));
            tasks.spawn(follow(
                "Secret",
                Api::<Secret>::all(c.clone()),
                None,
                events.clone(),
                pending.clone(),
            ));
            for (group, kind, plural) in ISTIO {
                let ar = ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(group, "v1", kind),
                    plural,
                );
                let api = Api::<DynamicObject>::all_with(c.clone(), &ar);
                tasks.spawn(follow(kind, api, Some(ar), events.clone(), pending.clone()));
            }
            for (kind, plural) in GATEWAY_API {
                let version = gatewayapi::versions(kind).map_or("v1", |v| v[0]);
                let ar = ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(gatewayapi::GROUP, version, kind),
                    plural,
                );
                let api = Api::<DynamicObject>::all_with(c.clone(), &ar);
                // The origin (and log) label is the store-key kind, so the Gateway
                // API Gateway's origins never collide with Istio Gateways'.
                let label = gatewayapi::key_kind(kind);
                tasks.spawn(follow(
                    label,
                    api,
                    Some(ar),
                    events.clone(),
                    pending.clone(),
                ));
            }
            pending.arm();
            // Says what the first snapshot still waits for (an API server
            // that fails a list keeps the agent from serving).
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        let waiting = pending.waiting();
                        if !waiting.is_empty() {
                            tracing::warn!(kinds = ?waiting, "waiting for the first list of these kinds before serving any view");
                        }
                    }
                }
            }
            tasks.abort_all();
            Ok(())
        })
    }
}

/// The kinds whose first list has not arrived. Each [`follow`] registers its
/// kind when called; once every kind is registered ([`Pending::arm`]) the last
/// list to arrive sends [`SourceEvent::Synced`], after its own events (one
/// channel, in order).
struct Pending {
    state: Mutex<PendingState>,
    events: UnboundedSender<SourceEvent>,
}

#[derive(Default)]
struct PendingState {
    kinds: BTreeSet<&'static str>,
    armed: bool,
    done: bool,
}

impl Pending {
    fn new(events: UnboundedSender<SourceEvent>) -> Arc<Self> {
        Arc::new(Pending {
            state: Mutex::default(),
            events,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `kind` will be listed.
    fn expect(&self, kind: &'static str) {
        self.lock().kinds.insert(kind);
    }

    /// Every kind is registered: Synced may go.
    fn arm(&self) {
        let mut st = self.lock();
        st.armed = true;
        self.check(&mut st);
    }

    /// `kind`'s first list is in (or it is absent or forbidden).
    fn listed(&self, kind: &str) {
        let mut st = self.lock();
        st.kinds.remove(kind);
        self.check(&mut st);
    }

    fn check(&self, st: &mut PendingState) {
        if st.armed && !st.done && st.kinds.is_empty() {
            st.done = true;
            tracing::info!("every kind listed; serving views");
            let _ = self.events.send(SourceEvent::Synced);
        }
    }

    fn waiting(&self) -> Vec<&'static str> {
        self.lock().kinds.iter().copied().collect()
    }
}

/// A first list the API server refuses for good: the kind is not served
/// (`404`, CRD not installed) or not readable (`403`). It counts as empty.
fn absent_or_forbidden(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 403 || s.code == 404)
}

fn origin(kind: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    let ns = meta.namespace.as_deref().unwrap_or("");
    format!("{kind}/{ns}/{}", meta.name.as_deref().unwrap_or(""))
}

fn to_event<K: Serialize + kube::Resource>(
    kind: &str,
    obj: &K,
    ar: Option<&ApiResource>,
) -> SourceEvent {
    let origin = origin(kind, obj.meta());
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    // Dynamic objects from a list may lack apiVersion/kind; the parser needs them.
    if let (Some(ar), Some(map)) = (ar, v.as_object_mut()) {
        map.insert("apiVersion".into(), ar.api_version.clone().into());
        map.insert("kind".into(), ar.kind.clone().into());
    }
    match KubeObject::from_json(v) {
        Ok(Some(o)) => SourceEvent::Replace {
            origin,
            objects: vec![o],
            errors: vec![],
        },
        Ok(None) => SourceEvent::Remove { origin },
        Err(e) => SourceEvent::Replace {
            origin,
            objects: vec![],
            errors: vec![e.to_string()],
        },
    }
}

/// Follows one kind forever, translating watcher events into source events.
/// The kind is registered with `pending` at once, before the returned future
/// first runs, so the source can arm the wait once every task is made.
fn follow<K>(
    kind: &'static str,
    api: Api<K>,
    ar: Option<ApiResource>,
    events: UnboundedSender<SourceEvent>,
    pending: Arc<Pending>,
) -> impl Future<Output = ()> + Send
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    pending.expect(kind);
    async move {
        let stream = watcher::watcher(api, watcher::Config::default())
            .modify(|o| crate::objects::trim(o.meta_mut()))
            .default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut known: BTreeSet<String> = BTreeSet::new();
        let mut listing: Option<BTreeSet<String>> = None;
        // Logged once per outage (e.g. a CRD that is not installed fails every
        // retry); the retries themselves are at debug level.
        let mut failing = false;
        while let Some(ev) = stream.next().await {
            if ev.is_ok() {
                failing = false;
            }
            let mut listed = false;
            let out = match ev {
                Err(e) if absent_or_forbidden(&e) => {
                    if !failing {
                        tracing::warn!(kind, error = %e, "cannot list; counted as empty, retrying with backoff");
                    }
                    failing = true;
                    pending.listed(kind);
                    continue;
                }
                Err(e) if failing => {
                    tracing::debug!(kind, error = %e, "watch still failing; retrying with backoff");
                    continue;
                }
                Err(e) => {
                    failing = true;
                    tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
                    continue;
                }
                Ok(Event::Init) => {
                    listing = Some(BTreeSet::new());
                    continue;
                }
                Ok(Event::InitApply(o)) => {
                    let e = to_event(kind, &o, ar.as_ref());
                    if let (Some(l), SourceEvent::Replace { origin, .. }) = (listing.as_mut(), &e) {
                        l.insert(origin.clone());
                    }
                    vec![e]
                }
                Ok(Event::InitDone) => {
                    let fresh = listing.take().unwrap_or_default();
                    let gone: Vec<String> = known.difference(&fresh).cloned().collect();
                    known = fresh;
                    tracing::info!(kind, objects = known.len(), removed = gone.len(), "listed");
                    listed = true;
                    gone.into_iter()
                        .map(|origin| SourceEvent::Remove { origin })
                        .collect()
                }
                Ok(Event::Apply(o)) => {
                    let e = to_event(kind, &o, ar.as_ref());
                    if let SourceEvent::Replace { origin, .. } = &e {
                        known.insert(origin.clone());
                    }
                    vec![e]
                }
                Ok(Event::Delete(o)) => {
                    let origin = origin(kind, o.meta());
                    known.remove(&origin);
                    vec![SourceEvent::Remove { origin }]
                }
            };
            for e in out {
                if events.send(e).is_err() {
                    return;
                }
            }
            if listed {
                pending.listed(kind);
            }
        }
    }
}
