//! OpenShift Service Mesh objects in the YAML given to `meshctl local`.
//!
//! A `maistra.io/v2` ServiceMeshControlPlane becomes what it becomes in a
//! cluster (the same pure mapping, `mesh_api::maistra::smcp_map`): the mesh
//! config the agent watches (access log, outbound policy, tracing, redirect
//! ranges), the gateways it asks for (added to `--gateways`) and the mesh-wide
//! PeerAuthentication. The control plane here always lives in `istio-system`.
//! ServiceMeshMemberRoll / ServiceMeshMember are reported and skipped: local
//! namespaces join the mesh by their `istio-injection` label.

use anyhow::{bail, Context};
use mesh_agent::meshfile::{self, MeshFile};
use mesh_api::maistra::smcp::ServiceMeshControlPlane;
use mesh_api::maistra::smcp_check::field_report;
use mesh_api::maistra::smcp_map::{self, Owner};
use serde_json::Value;

use super::gateway::{self, Kind};

/// What one SMCP turns into locally.
#[derive(Debug)]
pub struct Local {
    /// The mesh config file's new text.
    pub mesh_text: String,
    pub gateways: Vec<Kind>,
    /// The mesh-wide PeerAuthentication, when `security.dataPlane.mtls` is set.
    pub peer_authentication: Option<Value>,
    /// One line per message to print (ignored fields, namespace note).
    pub notes: Vec<String>,
}

pub fn is_smcp(v: &Value) -> bool {
    v["kind"] == "ServiceMeshControlPlane"
        && v["apiVersion"]
            .as_str()
            .is_some_and(|a| a.starts_with("maistra.io/"))
}

/// SMMR / SMM: accepted, not applied locally.
pub fn is_membership(v: &Value) -> bool {
    matches!(
        v["kind"].as_str(),
        Some("ServiceMeshMemberRoll" | "ServiceMeshMember")
    ) && v["apiVersion"]
        .as_str()
        .is_some_and(|a| a.starts_with("maistra.io/"))
}

/// Maps the one SMCP among `objs` (if any) over the mesh config `base_text`.
/// More than one, or a bad one, is an error naming it and the field.
pub fn from_objects(objs: &[(String, Value)], base_text: &str) -> anyhow::Result<Option<Local>> {
    let found: Vec<&(String, Value)> = objs.iter().filter(|(_, v)| is_smcp(v)).collect();
    let (at, v) = match found.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        [a, b, ..] => bail!(
            "{} and {}: one ServiceMeshControlPlane per local mesh",
            a.0,
            b.0
        ),
    };
    let smcp: ServiceMeshControlPlane =
        serde_path_to_error::deserialize(v.clone()).map_err(|e| {
            anyhow::anyhow!(
                "{at}: ServiceMeshControlPlane field {}: {}",
                e.path(),
                e.inner()
            )
        })?;
    let name = smcp.metadata.name.clone().unwrap_or_default();
    let ns = smcp
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| gateway::NAMESPACE.into());
    let base = meshfile::parse(base_text).context("mesh config")?;
    let mut mesh = smcp_map::mesh_config(&smcp.spec, &ns, &base.mesh)
        .with_context(|| format!("{at}: ServiceMeshControlPlane {ns}/{name}"))?;
    let mut notes = Vec::new();
    if ns != gateway::NAMESPACE {
        notes.push(format!(
            "ServiceMeshControlPlane {ns}/{name}: the local control plane and gateways run in {}",
            gateway::NAMESPACE
        ));
    }
    mesh.root_namespace = base.mesh.root_namespace.clone();
    let mesh_text = mesh_agent::maistra::controlplane::render_mesh(&MeshFile { mesh, ..base })?;
    let gws = smcp.spec.gateways.as_ref();
    let on = |g: Option<&mesh_api::maistra::smcp::SmcpGateway>| {
        gws.and_then(|g| g.enabled) != Some(false) && g.and_then(|g| g.enabled) != Some(false)
    };
    let mut gateways = Vec::new();
    if on(gws.and_then(|g| g.ingress.as_ref())) {
        gateways.push(Kind::Ingress);
    }
    if on(gws.and_then(|g| g.egress.as_ref())) {
        gateways.push(Kind::Egress);
    }
    let owner = Owner {
        name: name.clone(),
        namespace: gateway::NAMESPACE.into(),
        uid: None,
    };
    for p in field_report(&smcp.spec).ignored {
        notes.push(format!(
            "ServiceMeshControlPlane {ns}/{name}: {p} is not applied by this mesh"
        ));
    }
    Ok(Some(Local {
        mesh_text,
        gateways,
        peer_authentication: smcp_map::peer_authentication(&smcp.spec, &owner),
        notes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objs(y: &str) -> Vec<(String, Value)> {
        vec![("smcp.yaml#1".into(), serde_yaml_ng::from_str(y).unwrap())]
    }

    #[test]
    fn smcp_becomes_mesh_config_gateways_and_notes() {
        let l = from_objects(
            &objs("apiVersion: maistra.io/v2\nkind: ServiceMeshControlPlane\nmetadata: {name: basic, namespace: istio-system}\nspec:\n  proxy: {networking: {trafficControl: {outbound: {policy: REGISTRY_ONLY}}}}\n  gateways: {egress: {enabled: false}}\n  addons: {kiali: {enabled: true}}\n"),
            "trustDomain: example.org\n",
        )
        .unwrap()
        .unwrap();
        let m = meshfile::parse(&l.mesh_text).unwrap();
        assert_eq!(
            m.mesh.outbound_traffic_policy.mode,
            mesh_api::meshconfig::OutboundMode::RegistryOnly
        );
        assert_eq!(m.mesh.trust_domain, "example.org", "base kept");
        assert_eq!(l.gateways, [Kind::Ingress]);
        assert_eq!(
            l.notes,
            ["ServiceMeshControlPlane istio-system/basic: spec.addons.kiali is not applied by this mesh"]
        );
        assert!(l.peer_authentication.is_none());
    }

    #[test]
    fn a_bad_smcp_names_the_file_and_field() {
        let e = from_objects(
            &objs("apiVersion: maistra.io/v2\nkind: ServiceMeshControlPlane\nmetadata: {name: basic}\nspec: {tracing: {sampling: 10001}}\n"),
            "",
        )
        .unwrap_err();
        let s = format!("{e:#}");
        assert!(
            s.contains("smcp.yaml#1") && s.contains("spec.tracing.sampling") && s.contains("10001"),
            "{s}"
        );
    }
}
