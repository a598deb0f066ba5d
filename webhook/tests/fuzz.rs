//! Fuzz targets of the webhook's AdmissionReview decoding: the injection
//! review (pods from the bookinfo sample, mutated, with annotations from
//! Istio's vocabulary) and the validation review (Istio resources from the
//! sample, mutated). `cargo test` runs each for about two seconds of random
//! inputs (bolero's random engine); run one longer by hand with
//! `BOLERO_RANDOM_TEST_TIME_MS=600000 cargo test -p mesh-webhook --test fuzz <name>`,
//! or coverage-guided under libFuzzer with
//! `cargo +nightly bolero test -p mesh-webhook --test fuzz <name> -T 10min`
//! (see tests/FUZZING.md).

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{apply_response, as_pod_of, docs, review_for, workload_pods};
use mesh_api::annotations::{sidecar, traffic};
use mesh_e2e::fuzz::{mutate, Bytes, Vocab};
use mesh_webhook::{InjectContext, MeshConfig};
use serde_json::{json, Value};

/// What `cargo test` spends on each target.
const CI_TIME: Duration = Duration::from_secs(2);

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/bookinfo");

fn read_docs(path: &str) -> Vec<Value> {
    docs(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// The bookinfo pods, and words for mutating them: their own, and every
/// annotation key with values Istio accepts or refuses.
fn pods() -> &'static (Vec<Value>, Vocab) {
    static P: OnceLock<(Vec<Value>, Vocab)> = OnceLock::new();
    P.get_or_init(|| {
        let pods: Vec<Value> = read_docs(&format!("{SAMPLES}/platform/bookinfo.yaml"))
            .iter()
            .flat_map(workload_pods)
            .map(|(p, w)| as_pod_of(&p, "default", &w))
            .collect();
        let mut vocab = Vocab::default();
        for p in &pods {
            vocab.extend(Vocab::from_example(p, &[]));
        }
        let keys = [
            sidecar::INJECT,
            sidecar::STATUS,
            sidecar::PROXY_CPU,
            sidecar::PROXY_MEMORY_LIMIT,
            sidecar::INTERCEPTION_MODE,
            sidecar::NATIVE_SIDECAR,
            sidecar::REWRITE_APP_HTTP_PROBERS,
            sidecar::USER_VOLUME,
            sidecar::USER_VOLUME_MOUNT,
            sidecar::TEMPLATES,
            sidecar::STATUS_PORT,
            sidecar::READINESS_APPLICATION_PORTS,
            sidecar::READINESS_FAILURE_THRESHOLD,
            traffic::INCLUDE_INBOUND_PORTS,
            traffic::EXCLUDE_OUTBOUND_IP_RANGES,
            traffic::KUBEVIRT_INTERFACES,
            mesh_api::annotations::PROXY_CONFIG,
            mesh_api::annotations::PROMETHEUS_PORT,
            mesh_api::annotations::DEFAULT_CONTAINER,
            mesh_api::ratelimit::ANNOTATION,
            "annotations",
            "labels",
            "initContainers",
            "hostNetwork",
            "livenessProbe",
            "httpGet",
        ];
        let values = [
            "true",
            "false",
            "y",
            "*",
            "",
            "0",
            "15021",
            "80,443",
            "10.0.0.0/8",
            "TPROXY",
            "100m",
            "1Gi",
            "sidecar",
            "{\"holdApplicationUntilProxyStarts\": true}",
            "{\"vol\": {\"emptyDir\": {}}}",
            "[{\"name\": \"v\"}]",
            "10/s,burst=5",
            "eth0",
        ];
        vocab.extend(Vocab {
            keys: keys.iter().map(|s| s.to_string()).collect(),
            strings: values.iter().map(|s| s.to_string()).collect(),
        });
        (pods, vocab)
    })
}

/// The injection review: any body gets an answer (never a panic), the answer
/// carries the request's uid, and a patch applies to the pod it was made for
/// (`apply_response` checks it is base64 RFC 6902 that applies).
#[test]
fn admission_review() {
    let mesh = MeshConfig::default();
    let ctx = InjectContext::default();
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let (pods, vocab) = pods();
            let mut pod = b.pick(pods).clone();
            mutate(&mut b, &mut pod, vocab);
            let mut review = review_for(&pod, "fuzz-uid", "admission.k8s.io/v1");
            if b.byte().is_multiple_of(8) {
                mutate(&mut b, &mut review, vocab);
            }
            let body = serde_json::to_vec(&review).expect("JSON");
            let r = mesh_webhook::admission::review(&body, &mesh, &ctx);
            if review["request"]["uid"] == json!("fuzz-uid")
                && review["apiVersion"] == json!("admission.k8s.io/v1")
                && review["kind"] == json!("AdmissionReview")
            {
                assert_eq!(r.uid, "fuzz-uid");
            }
            if r.allowed && r.patch_ops > 0 {
                apply_response(&review["request"]["object"], &r.body);
            }
        });
}

/// The validation review: any Istio resource (mutated from the samples) gets
/// an answer with the request's uid, and a denial says why.
#[test]
fn validation_review() {
    static RESOURCES: OnceLock<(Vec<Value>, Vocab)> = OnceLock::new();
    let (resources, vocab) = RESOURCES.get_or_init(|| {
        let dir = format!("{SAMPLES}/networking");
        let mut all = Vec::new();
        for f in std::fs::read_dir(&dir).expect("samples") {
            all.extend(read_docs(&f.expect("entry").path().to_string_lossy()));
        }
        let mut vocab = Vocab::default();
        for r in &all {
            vocab.extend(Vocab::from_example(
                r,
                &[
                    "security.istio.io/v1",
                    "AuthorizationPolicy",
                    "DENY",
                    "ISTIO_MUTUAL",
                ],
            ));
        }
        (all, vocab)
    });
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let mut obj = b.pick(resources).clone();
            mutate(&mut b, &mut obj, vocab);
            let mut review = review_for(&obj, "fuzz-uid", "admission.k8s.io/v1");
            review["request"]["kind"] = json!({"group": "networking.istio.io", "version": "v1",
                "kind": obj["kind"]});
            if b.byte().is_multiple_of(8) {
                mutate(&mut b, &mut review, vocab);
            }
            let body = serde_json::to_vec(&review).expect("JSON");
            if let Ok(v) = mesh_webhook::validate::review(&body) {
                assert_eq!(Some(v.uid.as_str()), review["request"]["uid"].as_str());
                assert!(v.allowed || v.message.as_deref().is_some_and(|m| !m.is_empty()));
                assert_eq!(v.body["response"]["allowed"], json!(v.allowed));
            }
        });
}
