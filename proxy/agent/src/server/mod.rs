//! The serving side: the pipeline that turns source events into snapshots
//! ([`pipeline`]), the stream proxies subscribe to ([`stream`]; who is woken
//! for a change in [`interest`], deltas sharing one encoding of each changed
//! service in [`encoded`]), per-proxy
//! sent/acked tracking ([`tracker`]), who may subscribe to what ([`access`],
//! with client certificates checked by [`peer`]) and the `/debug/syncz` and `/metrics` endpoints ([`debug`],
//! istiod's push metrics in [`xds_metrics`]).

pub mod access;
pub mod debug;
pub mod encoded;
pub mod interest;
pub mod peer;
pub mod pipeline;
pub mod push;
pub mod stream;
pub mod tls;
pub mod tracker;
pub mod xds_metrics;

mod shared;
mod viewcache;

pub use shared::{CaService, Shared};
