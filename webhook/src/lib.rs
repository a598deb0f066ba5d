//! `mesh-webhook`: the mutating admission webhook that injects the `istio-proxy`
//! sidecar (Istio-compatible), and `kube-inject` for workload YAML.
//!
//! [`validate`] answers the validating webhook (`/validate`) for Istio resources.
//!
//! Pure core: [`decide`] (should this pod get a sidecar, as Istio decides) and
//! [`inject()`] (the RFC 6902 patch that adds it). Around it: [`admission`] turns
//! AdmissionReview bytes into a response, [`kube_inject`] rewrites YAML streams,
//! and the thin I/O shell is [`server`] (axum over rustls, cert and mesh-config
//! reloading) configured by [`config`], counting injections in [`metrics`].

pub mod admission;
pub mod config;
pub mod decide;
pub mod inject;
pub mod kube_inject;
pub mod kubeapi;
mod limits;
pub mod metrics;
pub mod reload;
pub mod selfca;
pub mod server;
pub mod sharedca;
pub mod tls;
pub mod validate;

pub use decide::{decide, Decision, SkipReason};
pub use inject::{inject, inject_value, InjectContext, InjectError};
pub use k8s_openapi::api::core::v1::Pod;
pub use mesh_api::meshconfig::MeshConfig;
