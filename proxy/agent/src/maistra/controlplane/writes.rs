//! The ServiceMeshControlPlane reconciler's writes to the API: server-side
//! apply of the rendered objects (leaving alone those it did not create),
//! pruning, the mesh-config ConfigMap, the SMCP status, and the gateway
//! Deployments' availability for `Ready`.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use mesh_api::maistra::smcp::{ServiceMeshControlPlane, SmcpStatus};
use mesh_api::maistra::smcp_map;
use serde_json::{json, Value};

use super::{
    name_of, owned, ControlPlane, ControlPlaneError, FIELD_MANAGER, MESH_CONFIGMAP, RENDERABLE,
    RENDERABLE_NAMES,
};

impl ControlPlane {
    pub(super) fn api(&self, api_version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        Api::namespaced_with(self.client.clone(), &self.namespace, &ar)
    }

    pub(super) async fn write_configmap(&self, data: Value) -> Result<(), ControlPlaneError> {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": MESH_CONFIGMAP, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/part-of": "mesh"}},
            "data": data,
        });
        self.api("v1", "ConfigMap", "configmaps")
            .patch(MESH_CONFIGMAP, &ssa(), &Patch::Apply(&cm))
            .await?;
        Ok(())
    }

    /// Server-side applies `obj`, unless an object of that name exists that
    /// this reconciler did not create (e.g. the base install's gateway): that
    /// one is left alone and named in the result.
    pub(super) async fn apply(&self, obj: &Value) -> Result<Option<String>, ControlPlaneError> {
        let (Some(av), Some(kind), Some(name)) = (
            obj["apiVersion"].as_str(),
            obj["kind"].as_str(),
            obj["metadata"]["name"].as_str(),
        ) else {
            return Err(ControlPlaneError::Malformed {
                kind: obj["kind"].to_string(),
            });
        };
        let plural = RENDERABLE
            .iter()
            .find(|r| r.1 == kind)
            .map(|r| r.2)
            .ok_or_else(|| ControlPlaneError::Malformed { kind: kind.into() })?;
        let api = self.api(av, kind, plural);
        if let Some(cur) = api.get_opt(name).await? {
            if !owned(&cur) {
                return Ok(Some(format!("{kind}/{name}")));
            }
        }
        api.patch(name, &ssa(), &Patch::Apply(obj)).await?;
        Ok(None)
    }

    /// Deletes renderable objects this reconciler made that `keep` lacks.
    pub(super) async fn prune(&self, keep: &[Value]) -> Result<(), ControlPlaneError> {
        for (av, kind, plural) in RENDERABLE {
            let api = self.api(av, kind, plural);
            for name in RENDERABLE_NAMES {
                let kept = keep
                    .iter()
                    .any(|o| o["kind"] == kind && o["metadata"]["name"] == name);
                if kept {
                    continue;
                }
                let Some(o) = api.get_opt(name).await? else {
                    continue;
                };
                if owned(&o) {
                    api.delete(name, &DeleteParams::default()).await?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn write_status(
        &self,
        smcp: &ServiceMeshControlPlane,
        st: SmcpStatus,
    ) -> Result<(), ControlPlaneError> {
        let api: Api<ServiceMeshControlPlane> =
            Api::namespaced(self.client.clone(), &self.namespace);
        // A merge patch keeps a list it does not name: name every one.
        let mut v = serde_json::to_value(&st).unwrap_or_default();
        for k in ["conditions", "appliedFields", "ignoredFields"] {
            if v[k].is_null() {
                v[k] = json!([]);
            }
        }
        api.patch_status(
            &name_of(smcp),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": v })),
        )
        .await?;
        Ok(())
    }

    /// The gateway Deployments among `names` whose replicas are not all available.
    pub(super) async fn waiting(&self, names: &[String]) -> Result<Vec<String>, ControlPlaneError> {
        let api = self.api("apps/v1", "Deployment", "deployments");
        let mut out = Vec::new();
        for n in names {
            match api.get_opt(n).await? {
                Some(d) => out.extend(smcp_map::deployment_waiting(
                    &serde_json::to_value(&d).unwrap_or_default(),
                )),
                None => out.push(format!("Deployment/{n} (missing)")),
            }
        }
        Ok(out)
    }
}

fn ssa() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}
