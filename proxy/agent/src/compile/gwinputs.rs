//! Inputs only gateway views need, gathered from the store at compile time:
//! the credential keys of Secrets and the selectors and ports of Services (a
//! Gateway's `port.number` is a port of the Service that selects the gateway pod).

use crate::objects::KubeObject;
use crate::store::Store;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The credential keys of one Secret (see [`crate::objects::CREDENTIAL_KEYS`]).
/// `Debug` shows key names and sizes only: these bytes are private keys.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretKeys(pub BTreeMap<String, Vec<u8>>);

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, format!("[{} bytes]", v.len()))),
            )
            .finish()
    }
}

/// Secrets by (namespace, name).
pub type Secrets = BTreeMap<(String, String), Arc<SecretKeys>>;

/// A Service's selector and its ports (`port` → numeric `targetPort`, when numeric).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelectorService {
    pub namespace: String,
    pub name: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<(u16, Option<u16>)>,
}

pub fn secrets(store: &Store) -> Secrets {
    store
        .of_kind("Secret")
        .filter_map(|e| match &*e.object {
            KubeObject::Secret(s) => {
                let ns = s
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let keys = s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect();
                Some(((ns, s.metadata.name.clone()?), Arc::new(SecretKeys(keys))))
            }
            _ => None,
        })
        .collect()
}

/// Services with a non-empty selector (only those select pods).
pub fn selector_services(store: &Store) -> Vec<SelectorService> {
    store
        .of_kind("Service")
        .filter_map(|e| match &*e.object {
            KubeObject::Service(s) => {
                let spec = s.spec.as_ref()?;
                let selector = spec.selector.clone().filter(|m| !m.is_empty())?;
                let ports = spec
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        let port = u16::try_from(p.port).ok()?;
                        let target = match &p.target_port {
                            Some(IntOrString::Int(t)) => u16::try_from(*t).ok(),
                            // A named targetPort is the pod's port of that name,
                            // which the Service object alone does not tell.
                            Some(IntOrString::String(_)) => None,
                            None => Some(port),
                        };
                        Some((port, target))
                    })
                    .collect();
                Some(SelectorService {
                    namespace: s
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    name: s.metadata.name.clone().unwrap_or_default(),
                    selector,
                    ports,
                })
            }
            _ => None,
        })
        .collect()
}
