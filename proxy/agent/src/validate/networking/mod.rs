//! Single-resource checks of the networking kinds (VirtualService,
//! DestinationRule, Gateway, ServiceEntry, Sidecar), following Istio's webhook
//! rules. One file per kind; the parts several routes or policies share have
//! their own files (`http_route`, `route_destination`, `client_tls`).
//!
//! This file only re-exports the kinds' entry points for
//! [`crate::validate::validate`]; no file below uses it, so the kind files
//! depend on the part files and on `validate::{checks, report}`, never back.

mod client_tls;
mod destination_rule;
mod gateway;
mod http_route;
mod route_destination;
mod service_entry;
mod sidecar;
mod virtual_service;

pub use destination_rule::destination_rule;
pub use gateway::gateway;
pub use service_entry::service_entry;
pub use sidecar::sidecar;
pub use virtual_service::virtual_service;
