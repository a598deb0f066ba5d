//! `mesh-agent`: the config-sync agent. Istio config and service discovery in,
//! versioned per-proxy snapshots out.
//!
//! Pipeline: a [`source`] (a folder of YAML, or the Kubernetes API) feeds objects
//! into a [`store::Store`]; the pure [`compile`] step turns the store into an
//! immutable, versioned [`compile::Snapshot`] after [`validate`] has rejected bad
//! Istio resources (the rest still applies); [`view`] cuts a per-proxy view out of
//! a snapshot; [`server`] streams views to subscribed proxies and tracks ACK/NACK;
//! [`client`] is the library a proxy uses to subscribe.
//!
//! Wire protocol (our choice, documented in `mesh_api::syncapi`): length-delimited
//! frames (4-byte big-endian length) each holding one JSON message, over TCP on
//! port 15012. It needs no protoc at build time and is trivial to debug; every
//! view is complete, so applying one is atomic. The same port answers one-shot
//! certificate requests to the mesh [`ca`] (a CSR in, a signed chain and the
//! roots out; keys never travel). When the CA is on the port speaks TLS 1.3
//! with a certificate the agent issues itself ([`server::tls`]); an optional
//! plaintext port serves config only. [`agent::start`] wires everything together;
//! the `mesh-agent` binary only parses and validates its [`config::Config`].

pub mod agent;
pub mod ca;
/// The client library lives in `mesh-api` (feature `client`) so the sidecar
/// can use it without linking this crate.
pub use mesh_api::syncclient as client;
pub mod compile;
pub mod config;
pub mod crdgen;
pub mod gateway;
pub mod gatewayapi;
pub mod maistra;
pub mod meshfile;
pub mod objects;
pub mod ondemand;
/// The stream framing, shared with the client in `mesh-api`.
pub use mesh_api::syncframe as protocol;
pub mod gwcontroller;
pub mod server;
pub mod source;
pub mod store;
pub mod validate;
pub mod view;
