//! `mesh-e2e`: what the end-to-end tests (and local mode) stand on.
//!
//! [`harness`] builds a node and pods as network namespaces wired by the real CNI
//! plugins, and runs processes inside them; [`echo`] is the application that
//! reports who answered and what it received (both are local mode's runtime,
//! the `mesh-runtime` crate under `cli/`, re-exported here); [`testca`] is the PKI of the
//! tests that bring their own certificates; [`fuzz`] turns a fuzzer's bytes
//! into structured inputs for the crates' fuzz targets (`tests/FUZZING.md`);
//! [`wait`] polls for a positive signal; [`zipkin`] receives the proxies' spans; `fake_api` (feature `fake-api`) is the
//! in-process Kubernetes API server of the tests that talk to one.
//! The tests in `tests/` drive these with real clients (curl, h2load).

pub mod bins;
#[cfg(feature = "fake-api")]
pub mod fake_api;
pub mod fuzz;
pub mod testca;
pub mod wait;
pub mod zipkin;

pub use mesh_runtime as harness;
pub use mesh_runtime::echo;
