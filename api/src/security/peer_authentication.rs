//! `PeerAuthentication`: the mTLS mode a workload accepts inbound.

use super::selector::LabelSelector;
use crate::networking::common::Extra;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Spec of a `PeerAuthentication`.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    plural = "peerauthentications",
    shortname = "pa",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerAuthenticationSpec {
    pub selector: Option<LabelSelector>,
    pub mtls: Option<MutualTls>,
    /// Per-port overrides, keyed by port number (as a string in JSON).
    pub port_level_mtls: BTreeMap<String, MutualTls>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// An mTLS mode setting.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MutualTls {
    /// `UNSET`, `DISABLE`, `PERMISSIVE` or `STRICT`.
    pub mode: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}
