//! The Kubernetes objects the agent consumes, parsed from YAML text (files source)
//! or JSON (Kubernetes source) into one enum, with metadata trimmed to what the
//! agent uses so memory stays proportional to the mesh, not to the cluster's history.

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_api::gatewayapi::{self, GatewayApiResource};
use mesh_api::resource::{parse_object, IstioResource, ParseError, ResourceKey};

/// One object the agent cares about (boxed: sizes differ a lot). `Debug`
/// shows a Secret's key names and sizes, never its bytes.
#[derive(Clone, PartialEq)]
pub enum KubeObject {
    Namespace(Box<Namespace>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    ServiceAccount(Box<ServiceAccount>),
    Secret(Box<Secret>),
    Istio(IstioResource),
    /// A Kubernetes Gateway API object (`gateway.networking.k8s.io`); the
    /// translator turns these into Istio-shaped config.
    GatewayApi(GatewayApiResource),
}

impl std::fmt::Debug for KubeObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Namespace(o) => f.debug_tuple("Namespace").field(o).finish(),
            Self::Service(o) => f.debug_tuple("Service").field(o).finish(),
            Self::EndpointSlice(o) => f.debug_tuple("EndpointSlice").field(o).finish(),
            Self::Pod(o) => f.debug_tuple("Pod").field(o).finish(),
            Self::ServiceAccount(o) => f.debug_tuple("ServiceAccount").field(o).finish(),
            Self::Secret(o) => {
                let keys: Vec<String> = o
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}: [{} bytes]", v.0.len()))
                    .collect();
                f.debug_struct("Secret")
                    .field("key", &self.key().to_string())
                    .field("type", &o.type_)
                    .field("data", &keys)
                    .finish()
            }
            Self::Istio(r) => f.debug_tuple("Istio").field(r).finish(),
            Self::GatewayApi(r) => f.debug_tuple("GatewayApi").field(r).finish(),
        }
    }
}

/// Why an object could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    #[error(transparent)]
    Istio(#[from] ParseError),
    #[error("{kind} {name:?}: {message}")]
    Core {
        kind: String,
        name: String,
        message: String,
    },
}

impl KubeObject {
    /// `Kind/namespace/name` (cluster-scoped kinds have an empty namespace).
    pub fn key(&self) -> ResourceKey {
        let (kind, meta) = match self {
            Self::Namespace(o) => ("Namespace", &o.metadata),
            Self::Service(o) => ("Service", &o.metadata),
            Self::EndpointSlice(o) => ("EndpointSlice", &o.metadata),
            Self::Pod(o) => ("Pod", &o.metadata),
            Self::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Self::Secret(o) => ("Secret", &o.metadata),
            Self::Istio(r) => return r.key(),
            Self::GatewayApi(r) => return r.key(),
        };
        let ns = if kind == "Namespace" {
            String::new()
        } else {
            meta.namespace.clone().unwrap_or_else(|| "default".into())
        };
        ResourceKey {
            kind: kind.into(),
            namespace: ns,
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// Reads one object. `Ok(None)` for kinds the agent ignores.
    pub fn from_json(v: serde_json::Value) -> Result<Option<Self>, ObjectError> {
        if let Some(r) = parse_object(&v)? {
            return Ok(Some(Self::Istio(r)));
        }
        if let Some(mut r) = gatewayapi::parse(&v)? {
            trim(r.meta_mut());
            return Ok(Some(Self::GatewayApi(r)));
        }
        let api = v.get("apiVersion").and_then(|x| x.as_str()).unwrap_or("");
        let kind = v
            .get("kind")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string();
        let name = v
            .pointer("/metadata/name")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string();
        let err = |e: serde_json::Error| ObjectError::Core {
            kind: kind.clone(),
            name: name.clone(),
            message: e.to_string(),
        };
        let obj = match (api, kind.as_str()) {
            ("v1", "Namespace") => {
                Self::Namespace(Box::new(serde_json::from_value(v).map_err(err)?))
            }
            ("v1", "Service") => Self::Service(Box::new(serde_json::from_value(v).map_err(err)?)),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                Self::EndpointSlice(Box::new(serde_json::from_value(v).map_err(err)?))
            }
            ("v1", "Pod") => {
                let mut p: Pod = serde_json::from_value(v).map_err(err)?;
                // Only scheduling-independent facts are used: labels, SA, ports, IP, readiness.
                if let Some(spec) = p.spec.as_mut() {
                    spec.volumes = None;
                    spec.init_containers = None;
                    for c in &mut spec.containers {
                        c.env = None;
                        c.volume_mounts = None;
                        c.args = None;
                        c.command = None;
                    }
                }
                Self::Pod(Box::new(p))
            }
            ("v1", "ServiceAccount") => {
                Self::ServiceAccount(Box::new(serde_json::from_value(v).map_err(err)?))
            }
            ("v1", "Secret") => {
                let s: Secret = serde_json::from_value(v).map_err(err)?;
                Self::Secret(Box::new(keep_credential_keys(s)))
            }
            _ => return Ok(None),
        };
        let mut obj = obj;
        if let Some(m) = obj.core_meta_mut() {
            trim(m);
        }
        Ok(Some(obj))
    }

    fn core_meta_mut(&mut self) -> Option<&mut ObjectMeta> {
        Some(match self {
            Self::Namespace(o) => &mut o.metadata,
            Self::Service(o) => &mut o.metadata,
            Self::EndpointSlice(o) => &mut o.metadata,
            Self::Pod(o) => &mut o.metadata,
            Self::ServiceAccount(o) => &mut o.metadata,
            Self::Secret(o) => &mut o.metadata,
            Self::Istio(_) | Self::GatewayApi(_) => return None,
        })
    }
}

/// The Secret keys a gateway credential is read from (Istio's `credentialName`
/// lookup); every other key is dropped on arrival.
pub const CREDENTIAL_KEYS: [&str; 7] = [
    "tls.crt", "tls.key", "cert", "key", "ca.crt", "cacert", "ca.crl",
];

/// Keeps only what a gateway credential can use: the [`CREDENTIAL_KEYS`] of
/// `kubernetes.io/tls` and `Opaque` Secrets, with `stringData` (files source;
/// the API server never returns it) merged over `data` as the API server does.
/// Other Secrets (service account tokens, Helm releases, ...) keep no bytes, so
/// memory stays proportional to the gateway credentials.
fn keep_credential_keys(mut s: Secret) -> Secret {
    let usable = matches!(
        s.type_.as_deref(),
        None | Some("Opaque" | "kubernetes.io/tls")
    );
    let mut data = s.data.take().unwrap_or_default();
    for (k, v) in s.string_data.take().unwrap_or_default() {
        data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
    }
    data.retain(|k, _| usable && CREDENTIAL_KEYS.contains(&k.as_str()));
    s.data = (!data.is_empty()).then_some(data);
    s
}

/// Drops metadata the agent never reads (managed fields, last-applied config).
pub fn trim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A YAML document that could not be read, with its 1-based line in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub line: usize,
    pub message: String,
    /// True for YAML syntax errors (the file is unusable), false for a single bad object.
    pub syntax: bool,
}

/// Splits multi-document YAML, returning each readable object with the line its
/// document starts on, and each error with its line.
pub fn parse_yaml(text: &str) -> (Vec<(usize, KubeObject)>, Vec<DocError>) {
    let mut docs: Vec<(usize, String)> = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && line[3..].trim().is_empty() || line.trim_end() == "---" {
            docs.push((i + 2, String::new()));
        } else if let Some(last) = docs.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    let mut objs = Vec::new();
    let mut errs = Vec::new();
    for (start, doc) in docs {
        let value: serde_json::Value = match serde_yaml_ng::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map(|l| start + l.line() - 1).unwrap_or(start);
                errs.push(DocError {
                    line,
                    message: e.to_string(),
                    syntax: true,
                });
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        match KubeObject::from_json(value) {
            Ok(Some(o)) => objs.push((start, o)),
            Ok(None) => {}
            Err(e) => errs.push(DocError {
                line: start,
                message: e.to_string(),
                syntax: false,
            }),
        }
    }
    (objs, errs)
}
