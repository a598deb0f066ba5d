//! The certificates the sidecars show on `/certs`, for the rotation tests: a
//! CA's hash, sorted hash lists, and waiting until both sidecars show a state.

use std::time::{Duration, Instant};

use mesh_e2e::testca::TestCa;

use crate::common::Pod;
use crate::meshnet::admin_json;

/// SHA-256 of a CA's certificate, as the proxies' /certs shows it.
pub(crate) fn sha(ca: &TestCa) -> String {
    mesh_proxy::mtls::cert_hash(pem::parse(&ca.pem).unwrap().contents())
}

/// Waits until both sidecars' /certs satisfy `f`.
pub(crate) fn until_certs(pods: [&Pod; 2], what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for pod in pods {
        loop {
            let c = admin_json(pod, "/certs");
            if f(&c) {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: {} has {c}", pod.name());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub(crate) fn sorted(v: &serde_json::Value) -> Vec<String> {
    let mut l: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    l.sort();
    l
}
