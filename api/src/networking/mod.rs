//! `networking.istio.io` resources (VirtualService, DestinationRule, Gateway,
//! ServiceEntry, Sidecar) with Istio's exact JSON field names, so users' existing
//! YAML parses unchanged.
//!
//! The Rust types carry the `v1` version; `v1beta1` and `v1alpha3` have the same
//! schema and are accepted by [`crate::resource::parse_object`]. Every struct keeps
//! fields it does not know in `extra` (flattened), so nothing a user wrote is
//! silently dropped; validation reports them as warnings.

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;

pub use common::*;
pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;

/// API group of the networking resources.
pub const GROUP: &str = "networking.istio.io";
/// Versions served for the networking group, storage version first.
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// Service annotation limiting which namespaces see a Kubernetes Service
/// (comma-separated `exportTo` entries), as Istio reads it.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// Pod label overriding the endpoint locality (`region.zone.subzone`).
pub const LOCALITY_LABEL: &str = "istio-locality";
/// Pod/node labels that make up a locality when no override is set.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// EndpointSlice label naming the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
