//! `LabelSelector`, the workload selector both security resources embed. It is
//! its own leaf file so that `authorization_policy` and `peer_authentication`
//! can use it without importing their parent module (no import cycle).

use crate::networking::common::{Extra, Labels};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Selects workloads by labels (`selector.matchLabels`), Istio's type.WorkloadSelector.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    pub match_labels: Labels,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}
