//! The membership plan, case by case.

use super::*;
use crate::maistra::member::{
    ControlPlaneRef, MemberSelector, MemberSelectorRequirement, ServiceMeshMemberSpec,
};

const CP: &str = "istio-system";

fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceInfo {
    NamespaceInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        terminating: false,
    }
}

fn roll(spec: ServiceMeshMemberRollSpec) -> ServiceMeshMemberRoll {
    let mut r = ServiceMeshMemberRoll::new("default", spec);
    r.metadata.namespace = Some(CP.into());
    r.metadata.generation = Some(3);
    r
}

fn members(names: &[&str]) -> ServiceMeshMemberRollSpec {
    ServiceMeshMemberRollSpec {
        members: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn smm(ns: &str, name: &str, cp_name: &str, cp_ns: &str) -> ServiceMeshMember {
    let mut m = ServiceMeshMember::new(
        name,
        ServiceMeshMemberSpec {
            control_plane_ref: ControlPlaneRef {
                name: cp_name.into(),
                namespace: cp_ns.into(),
            },
        },
    );
    m.metadata.namespace = Some(ns.into());
    m.metadata.generation = Some(1);
    m
}

struct Case {
    roll: Option<ServiceMeshMemberRoll>,
    last_good: Option<ServiceMeshMemberRollSpec>,
    smms: Vec<ServiceMeshMember>,
    namespaces: Vec<NamespaceInfo>,
    owned: Vec<NetworkPolicy>,
    manage: bool,
}

impl Case {
    fn new(namespaces: Vec<NamespaceInfo>) -> Self {
        Case {
            roll: None,
            last_good: None,
            smms: vec![],
            namespaces,
            owned: vec![],
            manage: true,
        }
    }
    fn plan(&self) -> Plan {
        plan(&PlanInput {
            control_plane_namespace: CP,
            smcp_name: "basic",
            manage_network_policy: self.manage,
            roll: self.roll.as_ref(),
            last_good: self.last_good.as_ref(),
            members: &self.smms,
            namespaces: &self.namespaces,
            owned_policies: &self.owned,
        })
    }
}

fn cluster() -> Vec<NamespaceInfo> {
    vec![
        ns(CP, &[]),
        ns("bookinfo", &[]),
        ns("shop", &[("team", "shop")]),
        ns("other", &[]),
    ]
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn names(ps: &[NetworkPolicy]) -> Vec<String> {
    ps.iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap(),
                p.metadata.name.as_deref().unwrap()
            )
        })
        .collect()
}

#[test]
fn named_members_are_labelled_get_policies_and_status() {
    let mut c = Case::new(cluster());
    c.roll = Some(roll(members(&["bookinfo"])));
    let p = c.plan();
    assert_eq!(p.scope, Some(set(&[CP, "bookinfo"])));
    assert_eq!(p.label, vec!["bookinfo".to_string(), CP.to_string()]);
    assert!(p.unlabel.is_empty());
    assert_eq!(
        names(&p.ensure_policies),
        vec![
            "bookinfo/istio-mesh-basic",
            "bookinfo/istio-expose-route-basic",
            "istio-system/istio-mesh-basic",
            "istio-system/istio-expose-route-basic",
        ]
    );
    let s = p.roll_status.unwrap();
    assert_eq!(s.configured_members, vec!["bookinfo"]);
    assert_eq!(s.members, vec!["bookinfo"]);
    assert_eq!(s.annotations[CONFIGURED_MEMBER_COUNT], "1/1");
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(s.conditions[0].status, "True");
    assert_eq!(s.member_statuses[0].namespace, "bookinfo");
}

#[test]
fn mesh_policy_admits_member_namespaces_and_route_policy_the_router() {
    let [mesh, route] = policies("bookinfo", CP, "basic");
    let v = serde_json::to_value(&mesh).unwrap();
    assert_eq!(
        v["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"][MEMBER_OF_LABEL],
        CP
    );
    assert_eq!(v["metadata"]["labels"][MEMBER_OF_LABEL], CP);
    let v = serde_json::to_value(&route).unwrap();
    assert_eq!(
        v["spec"]["podSelector"]["matchLabels"][EXPOSE_ROUTE_LABEL],
        "true"
    );
    assert_eq!(
        v["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
            [INGRESS_POLICY_GROUP_LABEL],
        "ingress"
    );
}

#[test]
fn selectors_and_names_combine() {
    let mut c = Case::new(cluster());
    c.roll = Some(roll(ServiceMeshMemberRollSpec {
        members: vec!["bookinfo".into()],
        member_selectors: vec![MemberSelector {
            match_expressions: vec![MemberSelectorRequirement {
                key: "team".into(),
                operator: "In".into(),
                values: vec!["shop".into(), "ads".into()],
            }],
            ..Default::default()
        }],
    }));
    let p = c.plan();
    assert_eq!(p.scope, Some(set(&[CP, "bookinfo", "shop"])));
    assert_eq!(
        p.roll_status.unwrap().annotations[CONFIGURED_MEMBER_COUNT],
        "2/2"
    );
}

#[test]
fn star_takes_every_namespace_but_the_platforms_and_other_meshes_and_never_the_control_plane() {
    let mut nss = cluster();
    nss.push(ns("theirs", &[(MEMBER_OF_LABEL, "other-cp")]));
    for system in ["kube-system", "openshift-ingress", "openshift", "kube"] {
        nss.push(ns(system, &[]));
    }
    nss.push(ns("kubeflow", &[]));
    let mut c = Case::new(nss);
    c.roll = Some(roll(members(&["*"])));
    let p = c.plan();
    assert_eq!(
        p.scope,
        Some(set(&[CP, "bookinfo", "shop", "other", "kubeflow"]))
    );
    let s = p.roll_status.unwrap();
    assert_eq!(s.members, vec!["bookinfo", "kubeflow", "other", "shop"]);
    assert!(s.pending_members.is_empty());
}

#[test]
fn namespace_of_another_mesh_is_refused_with_a_message() {
    let mut nss = cluster();
    nss.push(ns("theirs", &[(MEMBER_OF_LABEL, "other-cp")]));
    let mut c = Case::new(nss);
    c.roll = Some(roll(members(&["bookinfo", "theirs"])));
    c.smms = vec![smm("theirs", "default", "basic", CP)];
    let p = c.plan();
    assert_eq!(p.scope, Some(set(&[CP, "bookinfo"])));
    assert!(!p.label.contains(&"theirs".to_string()));
    let s = p.roll_status.unwrap();
    assert_eq!(s.pending_members, vec!["theirs"]);
    assert_eq!(s.annotations[CONFIGURED_MEMBER_COUNT], "1/2");
    assert_eq!(s.conditions[0].status, "False");
    assert!(
        s.conditions[0]
            .message
            .as_deref()
            .unwrap()
            .contains("other-cp"),
        "{:?}",
        s.conditions
    );
    let (_, ms) = &p.member_statuses[0];
    let ready = ms.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("ErrMemberOfOtherMesh"));
    assert!(ready.message.as_deref().unwrap().contains("\"theirs\""));
}

#[test]
fn missing_namespace_is_pending() {
    let mut c = Case::new(cluster());
    c.roll = Some(roll(members(&["bookinfo", "later"])));
    let s = c.plan().roll_status.unwrap();
    assert_eq!(s.pending_members, vec!["later"]);
    assert_eq!(s.annotations[CONFIGURED_MEMBER_COUNT], "1/2");
}

#[test]
fn member_object_alone_makes_a_member() {
    let mut c = Case::new(cluster());
    c.smms = vec![
        smm("shop", "default", "basic", CP),
        // Another control plane's member: not ours, no status from us.
        smm("other", "default", "basic", "elsewhere"),
    ];
    let p = c.plan();
    assert_eq!(p.scope, Some(set(&[CP, "shop"])));
    assert_eq!(p.roll_status, None);
    assert_eq!(p.member_statuses.len(), 1);
    let ((ns, name), st) = &p.member_statuses[0];
    assert_eq!((ns.as_str(), name.as_str()), ("shop", "default"));
    assert_eq!(st.annotations["controlPlaneRef"], "istio-system/basic");
    assert!(st
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));
}

#[test]
fn member_object_with_a_wrong_name_or_control_plane_is_refused() {
    let mut c = Case::new(cluster());
    c.smms = vec![
        smm("shop", "mine", "basic", CP),
        smm("bookinfo", "default", "prod", CP),
    ];
    let p = c.plan();
    assert_eq!(p.scope, Some(set(&[CP])));
    let reasons: Vec<_> = p
        .member_statuses
        .iter()
        .map(|(_, s)| s.conditions[1].reason.clone().unwrap())
        .collect();
    assert_eq!(reasons, vec!["InvalidName", "ErrSMCPMissing"]);
}

#[test]
fn removing_a_member_unlabels_it_and_deletes_its_policies() {
    let mut nss = cluster();
    nss[1] = ns("bookinfo", &[(MEMBER_OF_LABEL, CP)]);
    nss[0] = ns(CP, &[(MEMBER_OF_LABEL, CP)]);
    let mut c = Case::new(nss);
    c.owned = [policies("bookinfo", CP, "basic"), policies(CP, CP, "basic")].concat();
    c.roll = Some(roll(members(&[])));
    let p = c.plan();
    assert_eq!(p.unlabel, vec!["bookinfo".to_string()]);
    assert!(p.label.is_empty());
    assert!(
        p.ensure_policies.is_empty(),
        "{:?}",
        names(&p.ensure_policies)
    );
    assert_eq!(
        p.delete_policies,
        vec![
            (
                "bookinfo".to_string(),
                "istio-expose-route-basic".to_string()
            ),
            ("bookinfo".to_string(), "istio-mesh-basic".to_string()),
        ]
    );
    // Without roll or member objects nothing is ours any more.
    c.roll = None;
    let p = c.plan();
    assert_eq!(p.scope, None);
    // The control-plane namespace keeps its label: it is always in its mesh.
    assert_eq!(p.unlabel, vec!["bookinfo".to_string()]);
    assert_eq!(p.delete_policies.len(), 4);
}

#[test]
fn policies_not_managed_are_neither_created_nor_kept() {
    let mut c = Case::new(cluster());
    c.roll = Some(roll(members(&["bookinfo"])));
    c.owned = policies("bookinfo", CP, "basic").to_vec();
    c.manage = false;
    let p = c.plan();
    assert!(p.ensure_policies.is_empty());
    assert_eq!(p.delete_policies.len(), 2);
    assert_eq!(p.label, vec!["bookinfo".to_string(), CP.to_string()]);
}

#[test]
fn invalid_roll_keeps_the_last_good_members_and_says_why() {
    let mut c = Case::new(cluster());
    c.roll = Some(roll(members(&["shop", "Not_A_Namespace"])));
    c.last_good = Some(members(&["bookinfo"]));
    let p = c.plan();
    assert_eq!(p.scope, Some(set(&[CP, "bookinfo"])));
    assert_eq!(p.spec_in_force, Some(members(&["bookinfo"])));
    let cond = &p.roll_status.unwrap().conditions[0];
    assert_eq!(cond.reason.as_deref(), Some("InvalidSpec"));
    assert!(cond.message.as_deref().unwrap().contains("Not_A_Namespace"));
}

#[test]
fn terminating_members_are_listed_and_not_served() {
    let mut nss = cluster();
    nss[1].terminating = true;
    let mut c = Case::new(nss);
    c.roll = Some(roll(members(&["bookinfo", "shop"])));
    let p = c.plan();
    assert_eq!(p.scope, Some(set(&[CP, "shop"])));
    let s = p.roll_status.unwrap();
    assert_eq!(s.terminating_members, vec!["bookinfo"]);
    assert_eq!(s.annotations[CONFIGURED_MEMBER_COUNT], "1/2");
}

#[test]
fn plan_is_stable_once_applied() {
    let mut nss = cluster();
    nss[0] = ns(CP, &[(MEMBER_OF_LABEL, CP)]);
    nss[1] = ns("bookinfo", &[(MEMBER_OF_LABEL, CP)]);
    let mut c = Case::new(nss);
    c.roll = Some(roll(members(&["bookinfo"])));
    c.owned = [policies("bookinfo", CP, "basic"), policies(CP, CP, "basic")].concat();
    let p = c.plan();
    assert!(p.label.is_empty() && p.unlabel.is_empty());
    assert!(p.ensure_policies.is_empty() && p.delete_policies.is_empty());
}

#[test]
fn transition_times_move_only_when_a_status_changes() {
    let mut c = Case::new(cluster());
    c.roll = Some(roll(members(&["bookinfo", "later"])));
    let mut first = c.plan().roll_status.unwrap();
    stamp_roll(None, &mut first, "T1");
    assert_eq!(
        first.conditions[0].last_transition_time.as_deref(),
        Some("T1")
    );
    // Same plan later: nothing moves, the status is equal (no write).
    let mut again = c.plan().roll_status.unwrap();
    stamp_roll(Some(&first), &mut again, "T2");
    assert_eq!(again, first);
    // "later" appears: the roll turns Ready and that member's condition moves.
    c.namespaces.push(ns("later", &[]));
    let mut next = c.plan().roll_status.unwrap();
    stamp_roll(Some(&first), &mut next, "T3");
    assert_eq!(next.conditions[0].status, "True");
    assert_eq!(
        next.conditions[0].last_transition_time.as_deref(),
        Some("T3")
    );
    let at = |s: &ServiceMeshMemberRollStatus, ns: &str| {
        s.member_statuses
            .iter()
            .find(|m| m.namespace == ns)
            .and_then(|m| m.conditions[0].last_transition_time.clone())
    };
    assert_eq!(at(&next, "bookinfo").as_deref(), Some("T1"));
    assert_eq!(at(&next, "later").as_deref(), Some("T3"));
}
