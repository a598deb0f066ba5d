//! One enum over every Istio resource kind we accept, and the parser that turns a
//! Kubernetes object (any served apiVersion) into it. The agent's sources, the CLI
//! and tests all parse through [`parse_object`], so version handling lives in one place.

use crate::networking::{self, DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService};
use crate::security::{self, AuthorizationPolicy, PeerAuthentication};
use crate::telemetry::{self, Telemetry};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::DeserializeOwned;
use std::fmt;

/// Every Istio kind the mesh understands, in the order CRDs are generated.
pub const KINDS: [&str; 8] = [
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "Sidecar",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "Telemetry",
];

/// Identifies a resource in messages and maps: `Kind/namespace/name`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ResourceKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// A parsed Istio resource of any supported kind (boxed: specs differ a lot in size).
#[derive(Debug, Clone, PartialEq)]
pub enum IstioResource {
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    Gateway(Box<Gateway>),
    ServiceEntry(Box<ServiceEntry>),
    Sidecar(Box<Sidecar>),
    PeerAuthentication(Box<PeerAuthentication>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    Telemetry(Box<Telemetry>),
}

/// Why an object that claims to be an Istio resource cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{kind} {name:?}: apiVersion {api_version:?} is not served (accepted: {accepted})")]
    Version {
        kind: String,
        name: String,
        api_version: String,
        accepted: String,
    },
    #[error("{key}: field {path}: {message}")]
    Field {
        key: ResourceKey,
        path: String,
        message: String,
    },
}

impl IstioResource {
    /// The resource's kind, e.g. `VirtualService`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::VirtualService(_) => "VirtualService",
            Self::DestinationRule(_) => "DestinationRule",
            Self::Gateway(_) => "Gateway",
            Self::ServiceEntry(_) => "ServiceEntry",
            Self::Sidecar(_) => "Sidecar",
            Self::PeerAuthentication(_) => "PeerAuthentication",
            Self::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Self::Telemetry(_) => "Telemetry",
        }
    }

    /// The resource's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::VirtualService(r) => &r.metadata,
            Self::DestinationRule(r) => &r.metadata,
            Self::Gateway(r) => &r.metadata,
            Self::ServiceEntry(r) => &r.metadata,
            Self::Sidecar(r) => &r.metadata,
            Self::PeerAuthentication(r) => &r.metadata,
            Self::AuthorizationPolicy(r) => &r.metadata,
            Self::Telemetry(r) => &r.metadata,
        }
    }

    /// `Kind/namespace/name`; a missing namespace reads as `default`, as kubectl applies it.
    pub fn key(&self) -> ResourceKey {
        let m = self.meta();
        ResourceKey {
            kind: self.kind().to_string(),
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
        }
    }

    /// The resource's `spec` as JSON (for unknown-field checks and hashing).
    pub fn spec_json(&self) -> serde_json::Value {
        let v = match self {
            Self::VirtualService(r) => serde_json::to_value(&r.spec),
            Self::DestinationRule(r) => serde_json::to_value(&r.spec),
            Self::Gateway(r) => serde_json::to_value(&r.spec),
            Self::ServiceEntry(r) => serde_json::to_value(&r.spec),
            Self::Sidecar(r) => serde_json::to_value(&r.spec),
            Self::PeerAuthentication(r) => serde_json::to_value(&r.spec),
            Self::AuthorizationPolicy(r) => serde_json::to_value(&r.spec),
            Self::Telemetry(r) => serde_json::to_value(&r.spec),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// Is `(group, kind)` one of ours, and if so, which versions are served.
fn served_versions(group: &str, kind: &str) -> Option<&'static [&'static str]> {
    if !KINDS.contains(&kind) {
        return None;
    }
    let want = match kind {
        "PeerAuthentication" | "AuthorizationPolicy" => security::GROUP,
        "Telemetry" => telemetry::GROUP,
        _ => networking::GROUP,
    };
    match group {
        _ if group != want => None,
        networking::GROUP => Some(&networking::VERSIONS),
        security::GROUP => Some(&security::VERSIONS),
        _ => Some(&telemetry::VERSIONS),
    }
}

/// Parses a Kubernetes object. `Ok(None)` when it is not an Istio kind we handle
/// (callers decide whether that matters); an error when it is one but is malformed
/// or uses an unserved apiVersion. The error names the field path and value.
pub fn parse_object(obj: &serde_json::Value) -> Result<Option<IstioResource>, ParseError> {
    let api_version = obj.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = obj.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let Some(versions) = served_versions(group, kind) else {
        return Ok(None);
    };
    let meta_json = obj.get("metadata").cloned().unwrap_or_default();
    let name = meta_json
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    if !versions.contains(&version) {
        return Err(ParseError::Version {
            kind: kind.into(),
            name,
            api_version: api_version.into(),
            accepted: versions
                .iter()
                .map(|v| format!("{group}/{v}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let key = ResourceKey {
        kind: kind.into(),
        namespace: meta_json
            .get("namespace")
            .and_then(|v| v.as_str())
            .unwrap_or("default")
            .into(),
        name,
    };
    let metadata: ObjectMeta = decode(&key, "metadata", meta_json)?;
    let spec = obj
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Object(Default::default()));
    Ok(Some(match kind {
        "VirtualService" => IstioResource::VirtualService(Box::new(build(&key, metadata, spec)?)),
        "DestinationRule" => IstioResource::DestinationRule(Box::new(build(&key, metadata, spec)?)),
        "Gateway" => IstioResource::Gateway(Box::new(build(&key, metadata, spec)?)),
        "ServiceEntry" => IstioResource::ServiceEntry(Box::new(build(&key, metadata, spec)?)),
        "Sidecar" => IstioResource::Sidecar(Box::new(build(&key, metadata, spec)?)),
        "PeerAuthentication" => {
            IstioResource::PeerAuthentication(Box::new(build(&key, metadata, spec)?))
        }
        "AuthorizationPolicy" => {
            IstioResource::AuthorizationPolicy(Box::new(build(&key, metadata, spec)?))
        }
        _ => IstioResource::Telemetry(Box::new(build(&key, metadata, spec)?)),
    }))
}

/// Builds a typed custom resource from metadata and a raw spec.
fn build<K>(
    key: &ResourceKey,
    metadata: ObjectMeta,
    spec: serde_json::Value,
) -> Result<K, ParseError>
where
    K: Resource + HasSpec,
    K::Spec: DeserializeOwned,
{
    let spec: K::Spec = decode(key, "spec", spec)?;
    Ok(K::assemble(metadata, spec))
}

/// Decodes one part of an object, naming the failing field path in the error.
pub(crate) fn decode<T: DeserializeOwned>(
    key: &ResourceKey,
    root: &str,
    v: serde_json::Value,
) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.path().to_string();
        ParseError::Field {
            key: key.clone(),
            path: if inner == "." {
                root.to_string()
            } else {
                format!("{root}.{inner}")
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// Glue so [`build`] can construct every CRD type generically.
pub trait HasSpec {
    type Spec;
    fn assemble(metadata: ObjectMeta, spec: Self::Spec) -> Self;
}

macro_rules! has_spec {
    ($($t:ty => $s:ty),*) => {$(
        impl HasSpec for $t {
            type Spec = $s;
            fn assemble(metadata: ObjectMeta, spec: Self::Spec) -> Self {
                let mut r = <$t>::new("", spec);
                r.metadata = metadata;
                r
            }
        }
    )*};
}

has_spec!(
    VirtualService => networking::VirtualServiceSpec,
    DestinationRule => networking::DestinationRuleSpec,
    Gateway => networking::GatewaySpec,
    ServiceEntry => networking::ServiceEntrySpec,
    Sidecar => networking::SidecarSpec,
    PeerAuthentication => security::PeerAuthenticationSpec,
    AuthorizationPolicy => security::AuthorizationPolicySpec,
    Telemetry => telemetry::TelemetrySpec
);
