//! `mesh-e2e`: what the end-to-end tests (and local mode) stand on.
//!
//! [`harness`] builds a node and pods as network namespaces wired by the real CNI
//! plugins, and runs processes inside them; [`echo`] is the test application that
//! reports who answered and what it received; [`testca`] is the PKI of the
//! tests that bring their own certificates; [`fuzz`] turns a fuzzer's bytes
//! into structured inputs for the crates' fuzz targets (`tests/FUZZING.md`);
//! [`wait`] polls for a positive signal; [`zipkin`] receives the proxies' spans; `fake_api` (feature `fake-api`) is the
//! in-process Kubernetes API server of the tests that talk to one.
//! The tests in `tests/` drive these with real clients (curl, h2load).

// Harness errors carry the whole context of a failed command (plugin, netns,
// stderr) on purpose; they are the cold path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod bins;
pub mod echo;
#[cfg(feature = "fake-api")]
pub mod fake_api;
pub mod fuzz;
pub mod harness;
pub mod testca;
pub mod wait;
pub mod zipkin;
