//! Istio's own rejected-annotation cases (`traffic-annotations-bad-*` in the shared
//! injection conformance data) must be rejected by our derivation too, with a
//! message that contains the fragment Istio's error contains; every input Istio
//! injects must derive without error.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mesh_api::{RedirectDefaults, RedirectParams};
use serde::Deserialize;

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/istio-inject")
}

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(conformance_dir().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Pod annotations of a workload document: the pod template's, or the Pod's own.
fn pod_annotations(doc: &serde_yaml_ng::Value) -> BTreeMap<String, String> {
    let meta = if doc["kind"] == "Pod" {
        &doc["metadata"]["annotations"]
    } else {
        &doc["spec"]["template"]["metadata"]["annotations"]
    };
    serde_yaml_ng::from_value(meta.clone()).unwrap_or_default()
}

#[test]
fn every_bad_traffic_annotation_case_is_rejected() {
    let mut checked = 0;
    for case in cases() {
        let input = case["input"].as_str().unwrap();
        if case["expect"] != "error" || !input.starts_with("traffic-annotations-bad-") {
            continue;
        }
        let text = std::fs::read_to_string(conformance_dir().join(input)).unwrap();
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let annotations = pod_annotations(&doc);
        assert!(!annotations.is_empty(), "{input}: no annotations found");
        let err =
            RedirectParams::for_pod(&annotations, &RedirectDefaults::default()).expect_err(input);
        let want = case["error_contains"].as_str().unwrap();
        let msg = err.to_string();
        assert!(
            msg.to_lowercase().contains(want),
            "{input}: {msg:?} lacks {want:?}"
        );
        let (key, value) = annotations.iter().next().unwrap();
        assert!(
            msg.contains(key) && msg.contains(value.as_str()),
            "{input}: {msg}"
        );
        checked += 1;
    }
    assert_eq!(checked, 5, "expected Istio's five bad-annotation cases");
}

#[test]
fn every_injected_input_derives_parameters() {
    let mut checked = 0;
    for case in cases() {
        if case["expect"] != "injected" {
            continue;
        }
        let input = case["input"].as_str().unwrap();
        let text = std::fs::read_to_string(conformance_dir().join(input)).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            // The document iterator cannot resync after a syntax error.
            let Ok(doc) = serde_yaml_ng::Value::deserialize(doc) else {
                break;
            };
            RedirectParams::for_pod(&pod_annotations(&doc), &RedirectDefaults::default())
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} documents checked");
}
