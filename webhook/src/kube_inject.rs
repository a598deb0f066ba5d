//! `kube-inject`: the same injection offline, over a stream of YAML documents.
//! Pods and the pod templates of Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! ReplicationController, Job, DeploymentConfig and CronJob (its `jobTemplate`) are
//! injected, `List` items are walked; any other document is copied through
//! byte for byte. Empty and null documents are dropped, as kubectl does.

use mesh_api::meshconfig::MeshConfig;
use serde_json::{json, Value};

use crate::decide::{decide, Decision};
use crate::inject::{mutate, InjectContext, InjectError, Workload};
use crate::Pod;

#[derive(Debug, thiserror::Error)]
pub enum KubeInjectError {
    #[error("document {doc}: not valid YAML: {error}")]
    Yaml { doc: usize, error: String },
    #[error("document {doc} ({kind} {name:?}): {error}")]
    Inject {
        doc: usize,
        kind: String,
        name: String,
        /// Not a `#[source]`: the message already includes it.
        error: Box<InjectError>,
    },
}

/// Kinds whose `spec.template` is a pod template.
const TEMPLATE_KINDS: [&str; 7] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "DeploymentConfig",
];

/// Splits a YAML stream on `---` document markers, keeping each document's
/// text. Content after the marker on its line (`--- null`, `--- {kind: Pod}`)
/// starts the next document.
fn split_documents(input: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in input.split_inclusive('\n') {
        let t = line.trim_end();
        if t == "---" {
            docs.push(String::new());
        } else if let Some(rest) = t.strip_prefix("--- ").or_else(|| t.strip_prefix("---\t")) {
            docs.push(format!("{}\n", rest.trim_start()));
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
        }
    }
    docs
}

/// A document with nothing but blank lines (tabs included), comments and
/// directives (kubectl skips it).
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l.starts_with('%')
    })
}

/// Injects every workload in `input`; returns the rewritten stream.
pub fn kube_inject(
    input: &str,
    mesh: &MeshConfig,
    ctx: &InjectContext,
) -> Result<String, KubeInjectError> {
    let mut out = String::new();
    for (i, text) in split_documents(input).into_iter().enumerate() {
        let doc = i + 1;
        if is_blank(&text) {
            continue;
        }
        let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| KubeInjectError::Yaml {
            doc,
            error: e.to_string(),
        })?;
        if value.is_null() {
            continue; // a null document (`--- null`, `~`): kubectl skips it too
        }
        let mut value = value;
        let changed = inject_object(&mut value, None, mesh, ctx).map_err(|e| {
            let (kind, name, source) = *e;
            KubeInjectError::Inject {
                doc,
                kind,
                name,
                error: Box::new(source),
            }
        })?;
        if changed {
            let y = serde_yaml_ng::to_string(&value).map_err(|e| KubeInjectError::Yaml {
                doc,
                error: e.to_string(),
            })?;
            out.push_str(&y);
        } else {
            out.push_str(&text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
        out.push_str("---\n");
    }
    Ok(out)
}

type ObjError = Box<(String, String, InjectError)>;

/// Injects one object (recursing into Lists); `Ok(true)` if it changed.
fn inject_object(
    obj: &mut Value,
    parent_ns: Option<&str>,
    mesh: &MeshConfig,
    ctx: &InjectContext,
) -> Result<bool, ObjError> {
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .or(parent_ns)
        .map(String::from);
    let wrap = |e: InjectError| Box::new((kind.clone(), name.clone(), e));
    if kind == "List" {
        let mut changed = false;
        if let Some(items) = obj["items"].as_array_mut() {
            for item in items {
                changed |= inject_object(item, ns.as_deref(), mesh, ctx)?;
            }
        }
        return Ok(changed);
    }
    let workload = Workload {
        api_version: obj["apiVersion"].as_str().unwrap_or("v1").to_string(),
        kind: kind.clone(),
        name: name.clone(),
    };
    let mut ctx = ctx.clone();
    ctx.namespace = ns.clone();
    if kind == "Pod" {
        ctx.workload = None;
        return inject_pod(obj, mesh, &ctx).map_err(wrap);
    }
    let template = if kind == "CronJob" {
        obj.pointer_mut("/spec/jobTemplate/spec/template")
    } else if TEMPLATE_KINDS.contains(&kind.as_str()) {
        obj.pointer_mut("/spec/template")
    } else {
        None
    };
    let Some(template) = template.filter(|t| t.is_object()) else {
        return Ok(false);
    };
    ctx.workload = Some(workload);
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or(json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    if let Some(ns) = &ns {
        pod["metadata"]["namespace"] = json!(ns);
    }
    if !inject_pod(&mut pod, mesh, &ctx).map_err(wrap)? {
        return Ok(false);
    }
    if let Some(m) = pod["metadata"].as_object_mut() {
        if template.pointer("/metadata/namespace").is_none() {
            m.remove("namespace");
        }
    }
    template["metadata"] = pod["metadata"].take();
    template["spec"] = pod["spec"].take();
    Ok(true)
}

/// Decides and injects one pod object in place; `Ok(false)` if skipped.
fn inject_pod(
    pod: &mut Value,
    mesh: &MeshConfig,
    ctx: &InjectContext,
) -> Result<bool, InjectError> {
    let typed: Pod = serde_json::from_value(pod.clone())
        .map_err(|e| InjectError::NotAPod(format!("not a valid pod template: {e}")))?;
    if let Decision::Skip(why) = decide(&typed, None, mesh) {
        tracing::warn!(pod = ?typed.metadata.name, %why, "skipping injection");
        return Ok(false);
    }
    mutate(pod, mesh, ctx)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_pass_through_verbatim_and_lists_are_walked() {
        let input = "# a comment\napiVersion: v1\nkind: Service\nmetadata: {name: s}   # odd  spacing\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec:\n    containers: [{name: app, image: app}]\n";
        let out = kube_inject(input, &MeshConfig::default(), &InjectContext::default()).unwrap();
        assert!(out.starts_with("# a comment\napiVersion: v1\nkind: Service\nmetadata: {name: s}   # odd  spacing\n---\n"), "{out}");
        let docs: Vec<Value> = split_documents(&out)
            .iter()
            .filter_map(|d| serde_yaml_ng::from_str::<Value>(d).ok())
            .filter(|v| !v.is_null())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[1]["items"][0]["spec"]["initContainers"][1]["name"],
            "istio-proxy"
        );
    }

    #[test]
    fn null_and_empty_documents_are_skipped_as_kubectl_does() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: app}]\n";
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n";
        for input in [
            format!("--- null\n---\n{pod}"),
            format!("---\n---\n{pod}---\n"),
            format!("{svc}---\n# only a comment\n---\n   \n--- ~\n---\nnull\n---\n{pod}"),
            "--- {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: [{name: app, image: app}]}}\n--- null\n".to_string(),
            // A whitespace-only document with a tab; a directive before a null document.
            format!("%YAML 1.2\n--- null\n---\n\t\n---\n{pod}---\n\t  \n"),
        ] {
            let out = kube_inject(&input, &MeshConfig::default(), &InjectContext::default())
                .unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let docs: Vec<Value> = split_documents(&out)
                .iter()
                .map(|d| serde_yaml_ng::from_str::<Value>(d).unwrap_or(Value::Null))
                .filter(|v| !v.is_null())
                .collect();
            let pods: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Pod").collect();
            assert_eq!(pods.len(), 1, "{input:?} gave {out}");
            assert_eq!(
                pods[0]["spec"]["initContainers"][1]["name"], "istio-proxy",
                "{out}"
            );
            // No null document comes out either.
            let nulls = split_documents(&out)
                .iter()
                .filter(|d| !is_blank(d))
                .filter(|d| serde_yaml_ng::from_str::<Value>(d).unwrap().is_null())
                .count();
            assert_eq!(nulls, 0, "{input:?} gave {out}");
        }
    }

    #[test]
    fn errors_name_the_document() {
        let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    metadata:\n      annotations: {traffic.sidecar.istio.io/includeInboundPorts: bad}\n    spec: {containers: [{name: a, image: a}]}\n";
        let e = kube_inject(input, &MeshConfig::default(), &InjectContext::default()).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("document 1")
                && m.contains("Deployment")
                && m.contains("includeInboundPorts"),
            "{m}"
        );
    }
}
