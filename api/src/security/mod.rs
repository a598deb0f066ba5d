//! `security.istio.io` resources: PeerAuthentication (inbound mTLS mode) and
//! AuthorizationPolicy (who may call what). The Rust types carry `v1`; `v1beta1`
//! has the same schema and is accepted by [`crate::resource::parse_object`].

pub mod authorization_policy;
pub mod peer_authentication;
mod selector;

pub use authorization_policy::*;
pub use peer_authentication::*;
pub use selector::LabelSelector;

/// API group of the security resources.
pub const GROUP: &str = "security.istio.io";
/// Versions served for the security group, storage version first.
pub const VERSIONS: [&str; 2] = ["v1", "v1beta1"];
