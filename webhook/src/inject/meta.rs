//! Which workload a pod belongs to (for `ISTIO_META_WORKLOAD_NAME`/`OWNER` and the
//! canonical-service labels), derived as Istio derives it from owner references
//! when the caller (kube-inject) does not already know.

use std::collections::BTreeMap;

use serde_json::Value;

/// The controller of a pod: `apiVersion`, `kind`, `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl Workload {
    /// `kubernetes://apis/<apiVersion>/namespaces/<ns>/<kinds>/<name>`.
    pub fn owner_uri(&self, namespace: &str) -> String {
        format!(
            "kubernetes://apis/{}/namespaces/{}/{}s/{}",
            self.api_version,
            namespace,
            self.kind.to_ascii_lowercase(),
            self.name
        )
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Istio's `GetDeployMetaFromPod`: the controller owner, with a ReplicaSet mapped to
/// its Deployment (name minus `-<pod-template-hash>`) and a Job created by a CronJob
/// mapped to the CronJob; no owner means the pod itself.
pub fn workload_of(pod: &Value) -> Workload {
    let meta = &pod["metadata"];
    let mut name = str_of(meta, "name").to_string();
    if name.is_empty() {
        name = str_of(meta, "generateName")
            .trim_end_matches('-')
            .to_string();
    }
    let owner = meta["ownerReferences"].as_array().and_then(|os| {
        os.iter()
            .find(|o| o["controller"].as_bool() == Some(true))
            .or(os.first())
    });
    let Some(o) = owner else {
        return Workload {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name,
        };
    };
    let (api_version, kind, oname) = (
        str_of(o, "apiVersion"),
        str_of(o, "kind"),
        str_of(o, "name"),
    );
    let hash = meta["labels"]["pod-template-hash"].as_str();
    if kind == "ReplicaSet" {
        if let Some(deploy) = hash.and_then(|h| oname.strip_suffix(&format!("-{h}"))) {
            return Workload {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: deploy.into(),
            };
        }
    }
    if kind == "Job" {
        // CronJob-created jobs are named <cronjob>-<scheduled time in minutes>.
        if let Some((cron, ts)) = oname.rsplit_once('-') {
            if !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()) {
                return Workload {
                    api_version: "batch/v1".into(),
                    kind: "CronJob".into(),
                    name: cron.into(),
                };
            }
        }
    }
    Workload {
        api_version: api_version.into(),
        kind: kind.into(),
        name: oname.into(),
    }
}

/// Label values: at most 63 characters, ending alphanumeric.
fn truncate63(s: &str) -> String {
    let t: String = s.chars().take(63).collect();
    t.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// `service.istio.io/canonical-name` and `-revision` values, as Istio picks them.
pub fn canonical(labels: &BTreeMap<String, String>, workload: &str) -> (String, String) {
    let pick = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let name = pick(&[
        mesh_api::annotations::CANONICAL_NAME,
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| workload.to_string());
    let rev = pick(&[
        mesh_api::annotations::CANONICAL_REVISION,
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".into());
    (truncate63(&name), truncate63(&rev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owners() {
        let p = json!({"metadata": {"name": "web-5d8-abc", "labels": {"pod-template-hash": "5d8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8", "controller": true}]}});
        let w = workload_of(&p);
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("Deployment", "web"));
        assert_eq!(
            w.owner_uri("shop"),
            "kubernetes://apis/apps/v1/namespaces/shop/deployments/web"
        );
        let p = json!({"metadata": {"name": "x", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-2890000", "controller": true}]}});
        assert_eq!(workload_of(&p).name, "nightly");
        let p = json!({"metadata": {"generateName": "solo-"}});
        assert_eq!(workload_of(&p).name, "solo");
        assert_eq!(workload_of(&p).kind, "Pod");
    }

    #[test]
    fn canonical_labels() {
        let l = BTreeMap::from([
            ("app".to_string(), "a".repeat(70)),
            ("version".into(), "v2".into()),
        ]);
        let (n, r) = canonical(&l, "w");
        assert_eq!((n.len(), r.as_str()), (63, "v2"));
        assert_eq!(
            canonical(&BTreeMap::new(), "w"),
            ("w".into(), "latest".into())
        );
    }
}
