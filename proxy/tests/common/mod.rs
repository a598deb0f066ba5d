//! Fixture shared by the proxy end-to-end tests: a node with a client pod and
//! server pods, redirect rules written by the real `mesh-cni redirect`, proxies
//! as UID 1337 fed a view file, echo apps as UID 1000.
//!
//! The parts live in submodules, re-exported here so that `common::*` names
//! everything: `view` (the view file), `pods` (what runs in a pod), `agent`
//! (a real mesh-agent), `probes` (asking running pods) and `world` (the
//! usual client and servers). They import each other, never this file.
#![allow(dead_code)]

mod agent;
mod pods;
mod probes;
mod view;
mod world;

// Not every test binary uses every part, nor every name of the crates below
// (the parts import what they need themselves, not through this file).
#[allow(unused_imports)]
pub use agent::*;
#[allow(unused_imports)]
pub use pods::*;
#[allow(unused_imports)]
pub use probes::*;
#[allow(unused_imports)]
pub use view::*;
#[allow(unused_imports)]
pub use world::*;

#[allow(unused_imports)]
pub use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use mesh_api::syncapi::{Endpoint, ProxyView, Service, ServicePort};
#[allow(unused_imports)]
pub use mesh_e2e::echo::EchoReply;
#[allow(unused_imports)]
pub use mesh_e2e::harness::{Node, Pod, PodProcess};
// Not every test binary writes files.
#[allow(unused_imports)]
pub use mesh_e2e::testca::write_file as write;
