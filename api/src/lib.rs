//! `mesh-api`: the vocabulary every component of the mesh speaks, and nothing else.
//!
//! Istio's names are our interface, so they are defined here exactly once: the
//! well-known ports and the proxy's UID ([`ports`]), every annotation and label key
//! we honour with typed, validating parsers ([`annotations`]), SPIFFE workload
//! identities ([`identity`]), and the redirect parameters that both the injector
//! (for `istio-init`) and the CNI plugin derive from a pod's annotations through one
//! function ([`redirect`]), so the two can never disagree. Configuration values
//! (durations, regexes, string matches) have one parser each ([`values`]), used by
//! the agent's validator and the proxy alike. This crate does no I/O, except
//! behind the `client` feature: the sync stream's framing ([`syncframe`], the
//! agent's server speaks it too) and the client a proxy follows the agent with
//! ([`syncclient`]). They live here, not in `mesh-agent`, so the sidecar links
//! neither the agent's Kubernetes client nor its CA.

pub mod accessfilter;
pub mod accesslog;
pub mod annotations;
mod capture;
pub mod crd;
pub mod gatewayapi;
pub mod gatewayview;
pub mod identity;
#[cfg(feature = "client")]
pub mod listen;
pub mod maistra;
pub mod meshconfig;
pub mod meshtracing;
pub mod networking;
pub mod portmap;
pub mod ports;
pub mod ratelimit;
pub mod redirect;
pub mod resource;
pub mod security;
pub mod sharedstr;
pub mod syncapi;
#[cfg(feature = "client")]
pub mod syncclient;
pub mod syncdelta;
#[cfg(feature = "client")]
pub mod syncencode;
#[cfg(feature = "client")]
pub mod syncframe;
pub mod syncidle;
pub mod synclookup;
mod syncview;
pub mod telemetry;
pub mod tracing;
pub mod values;

pub use annotations::AnnotationError;
pub use identity::{Identity, IdentityError};
pub use redirect::{InterceptionMode, RedirectDefaults, RedirectParams, Selection};
