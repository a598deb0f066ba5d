//! The pod as the plugin sees it (only the fields the decision needs), where it comes
//! from (a folder of pod YAML, or the Kubernetes API with bounded retries), and the
//! capture decision, made like Istio's CNI plugin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_api::annotations::{containers, sidecar};
use serde::Deserialize;

use crate::k8s::{self, K8sError, Kubeconfig};
pub use crate::pod_object::{Container, Meta, Pod, Spec};

/// Whether the plugin writes the capture for a pod, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Capture,
    Skip(String),
}

/// Istio's rules: only injected pods that do not capture for themselves.
pub fn decide(pod: &Pod, excluded_namespaces: &[String]) -> Decision {
    let m = &pod.metadata;
    if excluded_namespaces.contains(&m.namespace) {
        return Decision::Skip(format!("namespace {} is excluded", m.namespace));
    }
    let proxy = pod
        .spec
        .containers
        .iter()
        .find(|c| c.name == containers::PROXY)
        .or_else(|| {
            pod.spec.init_containers.iter().find(|c| {
                c.name == containers::PROXY && c.restart_policy.as_deref() == Some("Always")
            })
        });
    let Some(proxy) = proxy else {
        return Decision::Skip("no istio-proxy sidecar".into());
    };
    // A gateway (`router`, injected by the `gateway` template) receives its traffic
    // on its own listeners: capturing it would loop its upstream calls back in.
    if let Some(mode) = proxy
        .proxy_mode()
        .filter(|m| *m != containers::MODE_SIDECAR)
    {
        return Decision::Skip(format!("istio-proxy runs as {mode}, not a sidecar"));
    }
    if pod
        .spec
        .init_containers
        .iter()
        .any(|c| c.name == containers::INIT)
    {
        return Decision::Skip("istio-init writes the rules itself".into());
    }
    if m.annotations.get(sidecar::INJECT).map(|v| v.trim()) == Some("false") {
        return Decision::Skip(format!("{}=false", sidecar::INJECT));
    }
    if !m.annotations.contains_key(sidecar::STATUS) {
        return Decision::Skip(format!("no {} annotation", sidecar::STATUS));
    }
    if m.annotations
        .get(sidecar::INTERCEPTION_MODE)
        .map(|v| v.trim())
        == Some("NONE")
    {
        return Decision::Skip("interception mode NONE".into());
    }
    Decision::Capture
}

/// Where pods are read from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesSource {
    pub kubeconfig: PathBuf,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_retry_delay_ms")]
    pub retry_delay_ms: u64,
}

fn default_timeout_ms() -> u64 {
    2000
}
fn default_retries() -> u32 {
    3
}
fn default_retry_delay_ms() -> u64 {
    200
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("cannot read pod folder {dir}: {reason}")]
    Dir { dir: String, reason: String },
    #[error("reading pod {namespace}/{name} failed after {attempts} attempts: {last}")]
    Api {
        namespace: String,
        name: String,
        attempts: u32,
        last: Box<K8sError>,
    },
    #[error("no pod source configured (set podDir or kubernetes.kubeconfig)")]
    NoSource,
}

/// Finds `namespace/name` among the YAML/JSON documents of a folder.
pub fn from_dir(dir: &Path, namespace: &str, name: &str) -> Result<Pod, PodError> {
    let derr = |reason: String| PodError::Dir {
        dir: dir.display().to_string(),
        reason,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| derr(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    entries.sort();
    for path in entries {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            match Pod::deserialize(doc) {
                Ok(p) if p.metadata.name == name && p.metadata.namespace == namespace => {
                    return Ok(p)
                }
                Ok(_) => {}
                Err(e) => {
                    // A broken document ends the file: the parser cannot resync.
                    tracing::warn!(file = %path.display(), error = %e, "not a pod");
                    break;
                }
            }
        }
    }
    Err(PodError::NotFound {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// Reads a pod from the API server, retrying transient failures a bounded number of times.
pub fn from_api(src: &KubernetesSource, namespace: &str, name: &str) -> Result<Pod, PodError> {
    let attempts = src.retries + 1;
    let mut last = None;
    for attempt in 1..=attempts {
        let result = Kubeconfig::load(&src.kubeconfig).and_then(|kc| {
            k8s::get_pod(&kc, namespace, name, Duration::from_millis(src.timeout_ms))
        });
        match result {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {
                return Err(PodError::NotFound {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "reading pod failed");
                last = Some(e);
            }
        }
        if attempt < attempts {
            std::thread::sleep(Duration::from_millis(src.retry_delay_ms));
        }
    }
    Err(PodError::Api {
        namespace: namespace.into(),
        name: name.into(),
        attempts,
        last: Box::new(last.expect("at least one attempt")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const INJECTED: &str = "metadata: {name: a, namespace: default, annotations: {sidecar.istio.io/status: '{}'}}\nspec: {containers: [{name: app}, {name: istio-proxy}]}";

    #[test]
    fn decides_like_istio() {
        let none: Vec<String> = Vec::new();
        assert_eq!(decide(&pod(INJECTED), &none), Decision::Capture);
        let native = "metadata: {name: a, namespace: d, annotations: {sidecar.istio.io/status: x}}\nspec: {containers: [{name: app}], initContainers: [{name: istio-proxy, restartPolicy: Always}]}";
        assert_eq!(decide(&pod(native), &none), Decision::Capture);
        for (yaml, why) in [
            ("metadata: {name: a, namespace: default}\nspec: {containers: [{name: app}]}", "no istio-proxy"),
            ("metadata: {name: a, namespace: d}\nspec: {containers: [{name: app}], initContainers: [{name: istio-proxy}]}", "no istio-proxy"),
            ("metadata: {name: a, namespace: d, annotations: {sidecar.istio.io/status: x}}\nspec: {containers: [{name: istio-proxy}], initContainers: [{name: istio-init}]}", "istio-init"),
            ("metadata: {name: a, namespace: d, annotations: {sidecar.istio.io/status: x, sidecar.istio.io/inject: 'false'}}\nspec: {containers: [{name: istio-proxy}]}", "=false"),
            ("metadata: {name: a, namespace: d}\nspec: {containers: [{name: istio-proxy}]}", "sidecar.istio.io/status"),
            ("metadata: {name: a, namespace: d, annotations: {sidecar.istio.io/status: x}}\nspec: {containers: [{name: istio-proxy, args: [router]}]}", "runs as router"),
            ("metadata: {name: a, namespace: d, annotations: {sidecar.istio.io/status: x}}\nspec: {containers: [{name: istio-proxy, args: [proxy, router, --domain, x]}]}", "runs as router"),
        ] {
            match decide(&pod(yaml), &none) {
                Decision::Skip(r) => assert!(r.contains(why), "{r} vs {why}"),
                Decision::Capture => panic!("captured {yaml}"),
            }
        }
        // The mode is read where both dialects put it; a sidecar's is captured.
        for args in [
            "[sidecar]",
            "[proxy, sidecar, --domain, x]",
            "[--log=x]",
            "[]",
        ] {
            let yaml = format!("metadata: {{name: a, namespace: d, annotations: {{sidecar.istio.io/status: x}}}}\nspec: {{containers: [{{name: app}}, {{name: istio-proxy, args: {args}}}]}}");
            assert_eq!(decide(&pod(&yaml), &none), Decision::Capture, "{args}");
        }
        assert!(matches!(
            decide(&pod(INJECTED), &["default".to_string()]),
            Decision::Skip(_)
        ));
    }
}
