//! Pod templates of workload objects (Pod, Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, ReplicationController, Job, CronJob) — what analyze needs to know
//! about pods: namespace, labels, annotations, and whether a sidecar is already in.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// An `istio-proxy` container is already in the template (kube-injected).
    pub has_proxy: bool,
}

fn map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Workloads in a multi-document YAML text; other kinds and unreadable documents
/// are skipped (the agent's reader reports those).
pub fn parse(text: &str) -> Vec<Workload> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        // After a syntax error the stream is lost (the iterator would repeat the
        // error forever); the agent's reader reports the file as unreadable.
        let Ok(v) = <Value as serde::Deserialize>::deserialize(doc) else {
            break;
        };
        let items = if v["kind"] == "List" {
            v["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![v]
        };
        out.extend(items.iter().filter_map(from_value));
    }
    out
}

/// The pod template of one workload object (`None` for other kinds).
pub fn from_value(v: &Value) -> Option<Workload> {
    let kind = v["kind"].as_str()?;
    let template = match kind {
        "Pod" => v,
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &v["spec"]["template"],
        "CronJob" => &v["spec"]["jobTemplate"]["spec"]["template"],
        _ => return None,
    };
    let spec = &template["spec"];
    let has_proxy = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .any(|c| c["name"] == mesh_api::annotations::containers::PROXY);
    Some(Workload {
        kind: kind.to_string(),
        namespace: v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        name: v["metadata"]["name"].as_str().unwrap_or("").to_string(),
        labels: map(&template["metadata"]["labels"]),
        annotations: map(&template["metadata"]["annotations"]),
        has_proxy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_templates_of_every_workload_kind() {
        let y = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: x}\nspec: {template: {metadata: {labels: {app: a}}, spec: {containers: [{name: app}]}}}\n---\nkind: CronJob\nmetadata: {name: c}\nspec: {jobTemplate: {spec: {template: {metadata: {labels: {app: c}}, spec: {containers: [{name: istio-proxy}]}}}}}\n---\nkind: Service\nmetadata: {name: s}\n---\n: bad: [\n";
        let w = parse(y);
        assert_eq!(w.len(), 2);
        assert_eq!(
            (
                w[0].namespace.as_str(),
                w[0].labels["app"].as_str(),
                w[0].has_proxy
            ),
            ("x", "a", false)
        );
        assert_eq!(
            (w[1].namespace.as_str(), w[1].kind.as_str(), w[1].has_proxy),
            ("default", "CronJob", true)
        );
    }
}
