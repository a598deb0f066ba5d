//! Message types shared by several Istio resources: string matches, destinations,
//! port selectors, percentages, workload selectors.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Fields present in the input that this version of the types does not know.
/// Kept so a round trip loses nothing; reported as validation warnings.
pub type Extra = BTreeMap<String, serde_json::Value>;

/// Label map (`key: value`).
pub type Labels = BTreeMap<String, String>;

/// Istio's `StringMatch`: exactly one of `exact`, `prefix`, `regex` (RE2 syntax).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Selects a port of the destination service.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PortSelector {
    pub number: Option<u32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Where traffic goes: a host from the registry, optionally a subset and a port.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A percentage in `[0, 100]`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Percent {
    pub value: f64,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Selects workloads by labels (`workloadSelector` of Sidecar/DestinationRule/ServiceEntry).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    pub labels: Labels,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A port of a Gateway server, ServiceEntry or Sidecar listener.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Port {
    pub number: u32,
    pub protocol: Option<String>,
    pub name: Option<String>,
    pub target_port: Option<u32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}
