//! OpenShift Service Mesh objects in the YAML given to `meshctl local`.
//!
//! A `maistra.io/v2` ServiceMeshControlPlane becomes what it becomes in a
//! cluster (the same pure mapping, `mesh_api::maistra::smcp_map`): the mesh
//! config the agent watches (access log, outbound policy, tracing, redirect
//! ranges), the gateways it asks for (added to `--gateways`) and the mesh-wide
//! PeerAuthentication. The control plane here always lives in `istio-system`.
//! ServiceMeshMemberRoll / ServiceMeshMember go through the cluster's pure
//! membership plan ([`members`]): members get `maistra.io/member-of`, and from
//! then on pods are injected by OSSM's rule (member namespace and the pod's
//! `sidecar.istio.io/inject: "true"`), not by `istio-injection` labels.

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

/// SMMR / SMM.
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

/// The control plane's namespace in local mode.
const CONTROL_PLANE: &str = "istio-system";

/// Applies the ServiceMeshMemberRoll / ServiceMeshMembers among `objs` to the
/// local namespaces (labels `maistra.io/member-of` added or removed as the
/// plan says) and returns the member namespaces. A roll not named `default`
/// in `istio-system`, or a document that does not parse, is an error naming it.
pub fn members(
    objs: &[(String, Value)],
    namespaces: &mut std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    use mesh_api::maistra::member::MEMBER_OF_LABEL;
    use mesh_api::maistra::member::{ServiceMeshMember, ServiceMeshMemberRoll};
    use mesh_api::maistra::membership::{plan, NamespaceInfo, PlanInput};
    let mut roll: Option<ServiceMeshMemberRoll> = None;
    let mut smms = Vec::new();
    for (at, v) in objs {
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
        if v["kind"] == "ServiceMeshMemberRoll" {
            if (ns, name) != (CONTROL_PLANE, "default") {
                bail!("{at}: ServiceMeshMemberRoll {ns}/{name}: the roll is `default` in {CONTROL_PLANE}");
            }
            roll = Some(
                serde_json::from_value(v.clone())
                    .with_context(|| format!("{at}: ServiceMeshMemberRoll {ns}/{name}"))?,
            );
        } else {
            let m: ServiceMeshMember = serde_json::from_value(v.clone())
                .with_context(|| format!("{at}: ServiceMeshMember {ns}/{name}"))?;
            smms.push(m);
        }
    }
    if let Some(r) = &roll {
        r.spec
            .validate()
            .map_err(|e| anyhow::anyhow!("ServiceMeshMemberRoll {CONTROL_PLANE}/default: {e}"))?;
    }
    let infos: Vec<NamespaceInfo> = namespaces
        .iter()
        .map(|(name, labels)| NamespaceInfo {
            name: name.clone(),
            labels: labels.clone(),
            terminating: false,
        })
        .collect();
    let p = plan(&PlanInput {
        control_plane_namespace: CONTROL_PLANE,
        smcp_name: "basic",
        // No NetworkPolicies on one machine: nothing enforces them.
        manage_network_policy: false,
        roll: roll.as_ref(),
        last_good: None,
        members: &smms,
        namespaces: &infos,
        owned_policies: &[],
    });
    for ns in &p.label {
        if let Some(l) = namespaces.get_mut(ns) {
            l.insert(MEMBER_OF_LABEL.into(), CONTROL_PLANE.into());
        }
    }
    for ns in &p.unlabel {
        if let Some(l) = namespaces.get_mut(ns) {
            l.remove(MEMBER_OF_LABEL);
        }
    }
    Ok(p.scope.unwrap_or_default())
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

    #[test]
    fn membership_labels_members_and_refuses_a_misplaced_roll() {
        let mut nss: std::collections::BTreeMap<_, _> = [
            ("istio-system".to_string(), Default::default()),
            ("shop".to_string(), Default::default()),
            ("other".to_string(), Default::default()),
        ]
        .into();
        let roll = "apiVersion: maistra.io/v1\nkind: ServiceMeshMemberRoll\n\
                    metadata: {name: default, namespace: istio-system}\nspec: {members: [shop]}\n";
        let got = members(&objs(roll), &mut nss).unwrap();
        assert_eq!(got, ["istio-system".to_string(), "shop".into()].into());
        assert_eq!(nss["shop"]["maistra.io/member-of"], "istio-system");
        assert!(nss["other"].is_empty());
        let bad = roll.replace("name: default", "name: mine");
        let e = format!("{:#}", members(&objs(&bad), &mut nss).unwrap_err());
        assert!(
            e.contains("smcp.yaml#1") && e.contains("istio-system/mine"),
            "{e}"
        );
        let bad = roll.replace("[shop]", "[Shop_1]");
        let e = format!("{:#}", members(&objs(&bad), &mut nss).unwrap_err());
        assert!(e.contains("spec.members[0]") && e.contains("Shop_1"), "{e}");
    }
}
