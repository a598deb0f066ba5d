//! `mesh-bench`: mesh-proxy vs Envoy 1.40 vs a direct connection, on real pods
//! (network namespaces wired by the CNI plugins, redirect rules by `mesh-cni`),
//! measured in one interleaved run and written out as JSON, Markdown and SVG.
//!
//! [`server`] is the app, [`load`] the load generator (both run inside pods as
//! subcommands of the same binary), [`topology`] builds a variant ([`gateway`]
//! the ingress ones), [`run`]
//! drives the plan, [`report`] and [`svg`] write the results. The tracing
//! variants send their spans to a [`zipkin`] sink the bench runs.

pub mod certs;
pub mod envoy;
pub mod failures;
pub mod gateway;
pub mod load;
mod output;
pub mod ports;
pub mod procstat;
pub mod report;
pub mod run;
pub mod server;
mod summary;
pub mod svg;
pub mod topology;
mod tracing_report;
pub mod zipkin;

pub use output::{write_results, Meta};
pub use run::self_exe;
