//! Injection is a fixpoint: for every conformance input, injecting the injected pod
//! again yields an empty patch, and re-injection after another mutator touched the
//! pod (even one that dropped our status annotation) keeps exactly one sidecar.

mod common;

use common::{as_pod_of, docs, read, workload_pods};
use mesh_api::meshconfig::{MeshConfig, NativeSidecars};
use mesh_webhook::inject::mutate;
use mesh_webhook::{inject_value, InjectContext};
use serde_json::{json, Value};

fn all_input_pods() -> Vec<(String, Value)> {
    let cases: Vec<Value> = serde_json::from_str(&read("cases.json")).unwrap();
    let mut inputs: Vec<&str> = cases.iter().map(|c| c["input"].as_str().unwrap()).collect();
    inputs.sort_unstable();
    inputs.dedup();
    inputs
        .into_iter()
        .flat_map(|f| {
            docs(&read(f))
                .iter()
                .flat_map(workload_pods)
                .enumerate()
                .map(|(i, (p, w))| (format!("{f}#{i}"), as_pod_of(&p, "default", &w)))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn count(pod: &Value, name: &str) -> usize {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten())
        .filter(|c| c["name"] == name)
        .count()
}

#[test]
fn injecting_twice_changes_nothing() {
    let ctx = InjectContext::default();
    let native_off = MeshConfig {
        native_sidecars: NativeSidecars::Off,
        ..Default::default()
    };
    let mut hold = native_off.clone();
    hold.hold_application_until_proxy_starts = true;
    let mut cni = MeshConfig::default();
    cni.cni.enabled = true;
    let mut checked = 0;
    for mesh in [MeshConfig::default(), native_off, hold, cni] {
        for (id, pod) in all_input_pods() {
            let mut once = pod.clone();
            if mutate(&mut once, &mesh, &ctx).is_err() {
                continue; // the traffic-annotations-bad-* inputs
            }
            let again = inject_value(&once, &mesh, &ctx).unwrap();
            assert!(
                again.0.is_empty(),
                "{id}: second injection patched {again:?}"
            );
            assert_eq!(count(&once, "istio-proxy"), 1, "{id}");
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} pods checked");
}

#[test]
fn reinjection_after_another_mutator_keeps_one_sidecar() {
    let ctx = InjectContext::default();
    let mut merged = 0;
    for mesh in [
        MeshConfig::default(),
        MeshConfig {
            native_sidecars: NativeSidecars::Off,
            ..Default::default()
        },
    ] {
        for (id, pod) in all_input_pods() {
            let mut once = pod.clone();
            if mutate(&mut once, &mesh, &ctx).is_err() {
                continue;
            }
            // Another mutating webhook adds a container and drops our status annotation.
            let mut other = once.clone();
            other["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "logger", "image": "logger", "readinessProbe": {"tcpSocket": {"port": 24224}}}));
            other["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove("sidecar.istio.io/status");
            let mut twice = other.clone();
            mutate(&mut twice, &mesh, &ctx).unwrap();
            for n in ["istio-proxy", "logger"] {
                assert_eq!(count(&twice, n), 1, "{id}: {n}");
            }
            let inits = count(&twice, "istio-init") + count(&twice, "istio-validation");
            assert!(inits <= 1, "{id}: {inits} init containers");
            assert!(twice["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
            let probers = twice["spec"]
                .get("initContainers")
                .and_then(|i| i.as_array())
                .into_iter()
                .flatten()
                .chain(twice["spec"]["containers"].as_array().into_iter().flatten())
                .find(|c| c["name"] == "istio-proxy")
                .and_then(|p| p["env"].as_array())
                .and_then(|e| e.iter().find(|e| e["name"] == "ISTIO_KUBE_APP_PROBERS"))
                .and_then(|e| e["value"].as_str())
                .unwrap_or("{}")
                .to_string();
            let logger = twice["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "logger")
                .unwrap();
            let rewritten =
                logger["readinessProbe"]["httpGet"]["path"] == "/app-health/logger/readyz";
            assert_eq!(
                rewritten,
                probers.contains("/app-health/logger/readyz"),
                "{id}: {probers}"
            );
            merged += usize::from(rewritten);
        }
    }
    assert!(
        merged > 100,
        "new probes merged into the probers of only {merged} pods"
    );
}
