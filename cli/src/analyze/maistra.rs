//! OpenShift Service Mesh control planes in the analyzed files: a
//! `maistra.io/v2` ServiceMeshControlPlane is checked as the agent checks it
//! (`MESH0003` naming the field and value when it would be rejected) and every
//! field it sets that this mesh does not apply is listed, one `MESH0004` info
//! message per field path, so users migrating from OSSM see what is dropped.

use mesh_api::maistra::smcp::ServiceMeshControlPlane;
use mesh_api::maistra::smcp_check::field_report;
use serde::Deserialize;
use serde_json::Value;

use super::checks::{Level, Message};

/// The findings for every SMCP document of one file's text.
pub fn check(text: &str) -> Vec<Message> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let Ok(v) = Value::deserialize(doc) else {
            continue;
        };
        if v["kind"] != "ServiceMeshControlPlane"
            || !v["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("maistra.io/"))
        {
            continue;
        }
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        let resource = format!("ServiceMeshControlPlane {ns}/{name}");
        let invalid = |text: String| {
            Message {
            level: Level::Error,
            code: "MESH0003",
            name: "InvalidServiceMeshControlPlane",
            resource: resource.clone(),
            text,
            hint: "fix the field; the agent keeps the last good control-plane config and says why in the SMCP's status".into(),
        }
        };
        let smcp: ServiceMeshControlPlane = match serde_path_to_error::deserialize(v.clone()) {
            Ok(s) => s,
            Err(e) => {
                out.push(invalid(format!("field {}: {}", e.path(), e.inner())));
                continue;
            }
        };
        if let Err(e) = smcp.spec.validate() {
            out.push(invalid(e.to_string()));
        }
        for path in field_report(&smcp.spec).ignored {
            out.push(Message {
                level: Level::Info,
                code: "MESH0004",
                name: "ControlPlaneFieldNotApplied",
                resource: resource.clone(),
                text: format!("{path} is accepted but not applied by this mesh"),
                hint: "nothing to do unless you rely on it: OSSM operator features (add-on installs, runtime tuning, ...) have no equivalent here".into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_fields_one_message_each_and_bad_values_named() {
        let msgs = check(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
             apiVersion: maistra.io/v2\nkind: ServiceMeshControlPlane\n\
             metadata: {name: basic, namespace: istio-system}\n\
             spec:\n  tracing: {sampling: 20000}\n  addons: {kiali: {enabled: true}}\n  runtime: {}\n",
        );
        let got: Vec<(Level, &str, &str)> = msgs
            .iter()
            .map(|m| (m.level, m.code, m.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Level::Error,
                    "MESH0003",
                    "ServiceMeshControlPlane field spec.tracing.sampling: \"20000\" must be 0-10000 (0.01 % steps, 10000 = 100 %)"
                ),
                (Level::Info, "MESH0004", "spec.addons.kiali is accepted but not applied by this mesh"),
                (Level::Info, "MESH0004", "spec.runtime is accepted but not applied by this mesh"),
            ]
        );
        assert!(msgs
            .iter()
            .all(|m| m.resource == "ServiceMeshControlPlane istio-system/basic"));
    }
}
