//! The `kubernetes` source: kube-rs watchers on the same kinds as the files source.
//! Each object is its own origin (`Kind/namespace/name`), so an update replaces
//! exactly that object. A (re)list — at start, or after the watch expired with
//! `410 Gone` — is reconciled against what the store held: objects missing from the
//! fresh list are removed, unchanged ones cause no change (the store ignores equal
//! objects), so a dropped watch leaves no gap and no duplicate. Errors back off
//! (kube's default backoff) and the watch resumes. Metadata is trimmed on arrival
//! (managed fields, last-applied annotations) by [`crate::objects`].

use super::{Source, SourceError, SourceEvent};
use crate::objects::KubeObject;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::Serialize;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
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

impl Source for KubernetesSource {
    fn run(
        self: Box<Self>,
        events: UnboundedSender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>> {
        Box::pin(async move {
            let c = &self.client;
            let mut tasks = tokio::task::JoinSet::new();
            tasks.spawn(follow(
                "Namespace",
                Api::<Namespace>::all(c.clone()),
                None,
                events.clone(),
            ));
            tasks.spawn(follow(
                "Service",
                Api::<Service>::all(c.clone()),
                None,
                events.clone(),
            ));
            tasks.spawn(follow(
                "EndpointSlice",
                Api::<EndpointSlice>::all(c.clone()),
                None,
                events.clone(),
            ));
            tasks.spawn(follow(
                "Pod",
                Api::<Pod>::all(c.clone()),
                None,
                events.clone(),
            ));
            tasks.spawn(follow(
                "ServiceAccount",
                Api::<ServiceAccount>::all(c.clone()),
                None,
                events.clone(),
            ));
            tasks.spawn(follow(
                "Secret",
                Api::<Secret>::all(c.clone()),
                None,
                events.clone(),
            ));
            for (group, kind, plural) in ISTIO {
                let ar = ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(group, "v1", kind),
                    plural,
                );
                let api = Api::<DynamicObject>::all_with(c.clone(), &ar);
                tasks.spawn(follow(kind, api, Some(ar), events.clone()));
            }
            shutdown.cancelled().await;
            tasks.abort_all();
            Ok(())
        })
    }
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
async fn follow<K>(
    kind: &'static str,
    api: Api<K>,
    ar: Option<ApiResource>,
    events: UnboundedSender<SourceEvent>,
) where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default())
        .modify(|o| crate::objects::trim(o.meta_mut()))
        .default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut listing: Option<BTreeSet<String>> = None;
    while let Some(ev) = stream.next().await {
        let out = match ev {
            Err(e) => {
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
    }
}
