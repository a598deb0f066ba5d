//! Every pod our webhook patches validates against the Kubernetes 1.37 OpenAPI
//! schema with `kubernetes-validate --strict` (unknown fields are errors). The tool
//! comes from the CI tools venv (`$MESH_TOOLS_VENV`, /opt/mesh-tools) or, when that
//! is missing, is installed from PyPI into a venv under the system temp dir.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{apply_response, as_pod_of, docs, read, review_for, workload_pods};
use mesh_api::meshconfig::{MeshConfig, NativeSidecars};
use mesh_webhook::admission::review;
use mesh_webhook::InjectContext;
use serde_json::Value;

fn kubernetes_validate() -> PathBuf {
    // tests/install-deps.sh puts it in $MESH_TOOLS_VENV (default /opt/mesh-tools).
    let shared = std::env::var("MESH_TOOLS_VENV").unwrap_or_else(|_| "/opt/mesh-tools".into());
    let shared = Path::new(&shared).join("bin/kubernetes-validate");
    if shared.exists() {
        return shared;
    }
    let venv = std::env::temp_dir().join("mesh-webhook-kubernetes-validate");
    let bin = venv.join("bin/kubernetes-validate");
    if bin.exists() {
        return bin;
    }
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    assert!(
        ok(Command::new("python3").args(["-m", "venv"]).arg(&venv)),
        "python3 -m venv failed"
    );
    assert!(
        ok(Command::new(venv.join("bin/pip")).args(["install", "-q", "kubernetes-validate"])),
        "pip install kubernetes-validate failed"
    );
    bin
}

fn write_pods(dir: &Path) -> usize {
    let cases: Vec<Value> = serde_json::from_str(&read("cases.json")).unwrap();
    let mut inputs: Vec<&str> = cases.iter().map(|c| c["input"].as_str().unwrap()).collect();
    inputs.sort_unstable();
    inputs.dedup();
    let meshes = [
        MeshConfig::default(),
        MeshConfig {
            native_sidecars: NativeSidecars::Off,
            hold_application_until_proxy_starts: true,
            ..Default::default()
        },
        {
            let mut m = MeshConfig::default();
            m.cni.enabled = true;
            m.default_config.interception_mode = Some(mesh_api::InterceptionMode::Tproxy);
            m
        },
    ];
    let mut n = 0;
    for (mi, mesh) in meshes.iter().enumerate() {
        for f in &inputs {
            for (i, (p, w)) in docs(&read(f)).iter().flat_map(workload_pods).enumerate() {
                let pod = as_pod_of(&p, "default", &w);
                let body =
                    serde_json::to_vec(&review_for(&pod, "u", "admission.k8s.io/v1")).unwrap();
                let r = review(&body, mesh, &InjectContext::default());
                if r.patch_ops == 0 {
                    continue; // skipped or denied: nothing was patched
                }
                let patched = apply_response(&pod, &r.body);
                let path = dir.join(format!("{mi}-{f}-{i}.json"));
                std::fs::write(path, serde_json::to_vec_pretty(&patched).unwrap()).unwrap();
                n += 1;
            }
        }
    }
    // The shipped ingress gateway as injected (tests/gateway.rs keeps it current).
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/gateway-injected.yaml"
    );
    std::fs::copy(golden, dir.join("gateway-injected.yaml")).unwrap();
    n + 1
}

#[test]
fn patched_pods_validate_against_kubernetes_1_37() {
    let tool = kubernetes_validate();
    let dir = tempfile::tempdir().unwrap();
    let n = write_pods(dir.path());
    assert!(n > 250, "only {n} patched pods");
    // Control: the validator does reject an unknown field, so a pass means something.
    let bad = dir.path().join("control.json");
    std::fs::write(&bad, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containers":[{"name":"a","image":"a","restartPolicyy":"Always"}]}}"#).unwrap();
    let control = Command::new(&tool)
        .args(["--strict", "--quiet", "--kubernetes-version", "1.37.0"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !control.status.success(),
        "kubernetes-validate accepted an unknown field"
    );
    std::fs::remove_file(&bad).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out = Command::new(&tool)
        .args(["--strict", "--quiet", "--kubernetes-version", "1.37.0"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubernetes-validate rejected patched pods:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
