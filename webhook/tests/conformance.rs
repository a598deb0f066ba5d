//! Conformance with Istio's injector: every case of
//! `shared/conformance/istio-inject/cases.json` goes through `kube-inject` and the
//! webhook path (AdmissionReview in, JSONPatch out, applied to the pod), and the
//! result is compared with Istio's golden output.
//!
//! Compared (behaviour users depend on): inject/skip/error; init-container and
//! container names in order (so native-sidecar placement); `restartPolicy: Always`
//! on a native `istio-proxy`; volume names; the istio-iptables flags of
//! `istio-init`; the init/validation and proxy security contexts; proxy
//! resources (quantities compared by value) and readiness/startup probes; whether
//! the proxy holds the app (postStart hook); every app container's probes and
//! lifecycle hooks; `ISTIO_KUBE_APP_PROBERS` (as JSON); the tlsMode and
//! canonical-name/revision labels; the default-container annotation; image pull
//! secrets; and documents that are not workloads (compared parsed).
//!
//! Ignored, see [`IGNORED`] for why: images and pull policy, the proxy's
//! command/args/env (other than `ISTIO_KUBE_APP_PROBERS`), ports, volume mounts and
//! lifecycle argv, the istio-iptables `--log_output_level` flag, the args of
//! `istio-validation` (our `mesh-cni validate` takes only its own flags),
//! Istio-only volumes, and the `sidecar.istio.io/status`, `istio.io/rev` and
//! `prometheus.io/*` annotations.
//!
//! The test and its tally are here; its helpers are in `conformance_support/`:
//! `settings.rs` (a case's settings onto our MeshConfig, or why it is skipped) and
//! `compare.rs` (the differences between our pod and Istio's).

mod common;

#[path = "conformance_support/settings.rs"]
mod settings;

#[path = "conformance_support/compare.rs"]
mod compare;

use common::{apply_response, as_pod_of, docs, pods, read, review_for, workload_pods};
use compare::compare;
use mesh_webhook::admission::{review, V1};
use mesh_webhook::kube_inject::kube_inject;
use serde_json::Value;
use settings::settings;

/// What the comparison leaves out, and why.
const IGNORED: &[(&str, &str)] = &[
    (
        "image, imagePullPolicy",
        "we ship one image of our own binaries",
    ),
    (
        "istio-proxy command/args/env/ports/volumeMounts/lifecycle argv",
        "Istio's pilot-agent/Envoy interface; ours is mesh-proxy's",
    ),
    (
        "istio-iptables --log_output_level, --run-validation --skip-rule-apply",
        "pilot-agent logging flag; validation is our `mesh-cni validate` subcommand",
    ),
    (
        "volumes workload-socket, credential-socket, workload-certs, istio-ca-crl",
        "Istio's SPIFFE workload-API sockets and CRL; our agent delivers certs itself",
    ),
    (
        "annotations sidecar.istio.io/status, istio.io/rev, prometheus.io/*",
        "Istio-specific bookkeeping; Istio's own webhook test drops the status too",
    ),
];

struct Tally {
    kube_inject: usize,
    webhook: usize,
    skipped: Vec<String>,
    failures: Vec<String>,
}

fn run_case(case: &Value, t: &mut Tally) {
    let id = format!(
        "{}[{}] {}",
        case["test"].as_str().unwrap(),
        case["index"],
        case["input"].as_str().unwrap()
    );
    let (mesh, ctx) = match settings(case) {
        Ok(x) => x,
        Err(why) => return t.skipped.push(format!("{id}: {why}")),
    };
    let input = read(case["input"].as_str().unwrap());
    let expect = case["expect"].as_str().unwrap();
    let by = |p: &str| {
        case["checked_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == p)
    };
    let mut fail = |m: String| t.failures.push(format!("{id}: {m}"));

    // kube-inject path.
    if by("kube-inject") {
        t.kube_inject += 1;
        match (kube_inject(&input, &mesh, &ctx), expect) {
            (Err(e), "error") => {
                let want = case["error_contains"].as_str().unwrap();
                if !e.to_string().to_lowercase().contains(want) {
                    fail(format!("error {e:?} does not mention {want}"));
                }
            }
            (Err(e), _) => fail(format!("kube-inject failed: {e}")),
            (Ok(_), "error") => fail("kube-inject accepted a bad input".into()),
            (Ok(out), _) => {
                let ours = docs(&out);
                let golden = docs(&read(case["golden"].as_str().unwrap()));
                if ours.len() != golden.len() {
                    fail(format!(
                        "{} documents, Istio has {}",
                        ours.len(),
                        golden.len()
                    ));
                }
                for (o, g) in ours.iter().zip(&golden) {
                    let (op, gp) = (pods(o), pods(g));
                    if gp.is_empty() && o != g {
                        fail(format!("pass-through document differs: {o} vs {g}"));
                    }
                    for (a, b) in op.iter().zip(&gp) {
                        for d in compare(a, b) {
                            fail(format!("kube-inject {d}"));
                        }
                    }
                }
            }
        }
    }

    // Webhook path: each workload's pod as an AdmissionReview.
    let webhook = by("webhook") || expect == "error";
    if webhook {
        t.webhook += 1;
        let inputs: Vec<(Value, Value)> = docs(&input).iter().flat_map(workload_pods).collect();
        let goldens: Vec<Value> = case["golden"]
            .as_str()
            .map(|g| docs(&read(g)).iter().flat_map(pods).collect())
            .unwrap_or_default();
        for (i, (p, w)) in inputs.iter().enumerate() {
            let ns = w["metadata"]["namespace"].as_str().unwrap_or("default");
            let pod = as_pod_of(p, ns, w);
            let body = serde_json::to_vec(&review_for(&pod, &format!("uid-{i}"), V1)).unwrap();
            let r = review(&body, &mesh, &ctx);
            let resp = &r.body["response"];
            if resp["uid"] != format!("uid-{i}") {
                fail(format!("webhook uid not echoed: {resp}"));
            }
            match expect {
                "error" => {
                    let want = case["error_contains"].as_str().unwrap();
                    let msg = resp["status"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_lowercase();
                    if resp["allowed"] != false
                        || !msg.contains(want)
                        || resp.get("patch").is_some()
                    {
                        fail(format!("webhook should deny mentioning {want}: {resp}"));
                    }
                }
                _ => {
                    if resp["allowed"] != true {
                        fail(format!("webhook denied: {resp}"));
                        continue;
                    }
                    let patched = apply_response(&pod, &r.body);
                    if expect == "skipped" && patched != pod {
                        fail("webhook changed a pod Istio skips".into());
                    }
                    if let Some(g) = goldens.get(i) {
                        for d in compare(&patched, g) {
                            fail(format!("webhook {d}"));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn istio_injection_cases() {
    let cases: Vec<Value> = serde_json::from_str(&read("cases.json")).unwrap();
    assert_eq!(cases.len(), 136);
    let mut t = Tally {
        kube_inject: 0,
        webhook: 0,
        skipped: Vec::new(),
        failures: Vec::new(),
    };
    for case in &cases {
        run_case(case, &mut t);
    }
    let checked = cases.len() - t.skipped.len();
    eprintln!("Ignored by the comparison:");
    for (what, why) in IGNORED {
        eprintln!("  - {what}: {why}");
    }
    eprintln!(
        "Skipped {} of {} cases (unsupported settings):",
        t.skipped.len(),
        cases.len()
    );
    for s in &t.skipped {
        eprintln!("  - {s}");
    }
    eprintln!(
        "Checked {checked} of {} cases ({} through kube-inject, {} through the webhook)",
        cases.len(),
        t.kube_inject,
        t.webhook
    );
    assert!(
        t.failures.is_empty(),
        "{} mismatches:\n{}",
        t.failures.len(),
        t.failures.join("\n")
    );
    assert!(checked >= 110, "only {checked} cases checked");
}
