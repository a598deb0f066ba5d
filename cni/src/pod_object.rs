//! The pod as the plugin sees it: only the fields the capture decision needs,
//! deserialized from pod YAML or the API server's JSON. Its own file so `k8s`
//! (which fetches it) and `plugin::pod` (which decides on it) share it without
//! using each other.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Meta {
    pub name: String,
    pub namespace: String,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub restart_policy: Option<String>,
    pub args: Vec<String>,
}

impl Container {
    /// The proxy's mode as Istio's CNI plugin reads it from `istio-proxy`'s args:
    /// Istio's `proxy <mode>` or ours `<mode>` (command `mesh-proxy`). `None` when
    /// the container states none (a user's placeholder, an old pod).
    pub(crate) fn proxy_mode(&self) -> Option<&str> {
        match self.args.as_slice() {
            [first, mode, ..] if first == "proxy" => Some(mode),
            [mode, ..] if !mode.starts_with('-') => Some(mode),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Spec {
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Pod {
    pub metadata: Meta,
    pub spec: Spec,
}
