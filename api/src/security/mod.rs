//! `security.istio.io` resources: PeerAuthentication (inbound mTLS mode) and
//! AuthorizationPolicy (who may call what). The Rust types carry `v1`; `v1beta1`
//! has the same schema and is accepted by [`crate::resource::parse_object`].

pub mod authorization_policy;
pub mod peer_authentication;

pub use authorization_policy::*;
pub use peer_authentication::*;

/// API group of the security resources.
pub const GROUP: &str = "security.istio.io";
/// Versions served for the security group, storage version first.
pub const VERSIONS: [&str; 2] = ["v1", "v1beta1"];

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
