//! The membership plan: from a control plane's ServiceMeshMemberRoll, the
//! ServiceMeshMembers and the cluster's namespaces, what the agent serves and
//! what it writes (namespace labels, NetworkPolicies, statuses). Pure: the
//! agent's reconciler reads the cluster, calls [`plan`], and applies the
//! difference, so every decision here is unit-tested without an API server.
//!
//! Semantics follow OSSM 2.x: a roll or a member object puts the control plane
//! in multitenant mode (only members and the control-plane namespace are in the
//! mesh); members are named (`*`: all), selected by labels, or joined by a
//! member object; a namespace labelled `maistra.io/member-of` another control
//! plane is refused; the control-plane namespace is always in and never listed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, ObjectMeta};

use super::member::{
    Condition, MemberStatusSummary, ServiceMeshMember, ServiceMeshMemberRoll,
    ServiceMeshMemberRollSpec, ServiceMeshMemberRollStatus, ServiceMeshMemberStatus,
    ALL_NAMESPACES, DEFAULT_NAME, MEMBER_OF_LABEL,
};

/// Pod label that opens a pod to the OpenShift router (`istio-expose-route-*`).
pub const EXPOSE_ROUTE_LABEL: &str = "maistra.io/expose-route";
/// Namespace label of OpenShift's ingress (router) namespaces.
pub const INGRESS_POLICY_GROUP_LABEL: &str = "network.openshift.io/policy-group";
/// Labels naming the control plane that owns an object we created.
pub const OWNER_LABEL: &str = "maistra.io/owner";
pub const OWNER_NAME_LABEL: &str = "maistra.io/owner-name";
/// Roll status annotation: `configured/total`.
pub const CONFIGURED_MEMBER_COUNT: &str = "configuredMemberCount";

/// A namespace as the plan needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Has a deletion timestamp.
    pub terminating: bool,
}

/// Everything the plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub control_plane_namespace: &'a str,
    /// Name of the ServiceMeshControlPlane (NetworkPolicy names, member refs).
    pub smcp_name: &'a str,
    /// The SMCP's `spec.security.manageNetworkPolicy` (OSSM default: true).
    pub manage_network_policy: bool,
    /// The roll named `default` in the control-plane namespace, if any.
    pub roll: Option<&'a ServiceMeshMemberRoll>,
    /// The last roll spec that validated: in force while the current one is bad.
    pub last_good: Option<&'a ServiceMeshMemberRollSpec>,
    /// Every ServiceMeshMember in the cluster (those of other control planes are skipped).
    pub members: &'a [ServiceMeshMember],
    pub namespaces: &'a [NamespaceInfo],
    /// NetworkPolicies that carry `maistra.io/member-of=<control plane>` now.
    pub owned_policies: &'a [NetworkPolicy],
}

/// What the cluster should look like, and what the agent serves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Namespaces the agent serves; `None`: not multitenant, all of them.
    pub scope: Option<BTreeSet<String>>,
    /// The roll spec in force (valid), to keep as the next `last_good`.
    pub spec_in_force: Option<ServiceMeshMemberRollSpec>,
    /// Namespaces to label `maistra.io/member-of=<control plane>`.
    pub label: Vec<String>,
    /// Namespaces whose `maistra.io/member-of=<control plane>` label goes.
    pub unlabel: Vec<String>,
    /// NetworkPolicies to create or replace (missing or different).
    pub ensure_policies: Vec<NetworkPolicy>,
    /// Our NetworkPolicies to delete: (namespace, name).
    pub delete_policies: Vec<(String, String)>,
    /// Status of the roll, when there is one.
    pub roll_status: Option<ServiceMeshMemberRollStatus>,
    /// Status of each ServiceMeshMember that refers to this control plane,
    /// by (namespace, name).
    pub member_statuses: Vec<((String, String), ServiceMeshMemberStatus)>,
}

/// Why a requested namespace is or is not configured.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Configured,
    Missing,
    Terminating,
    OtherMesh(String),
}

impl State {
    fn condition(&self, ns: &str) -> Condition {
        match self {
            State::Configured => Condition::new("Ready", true, "Configured", ""),
            State::Missing => Condition::new(
                "Ready",
                false,
                "ErrNamespaceMissing",
                format!("namespace {ns:?} does not exist"),
            ),
            State::Terminating => Condition::new(
                "Ready",
                false,
                "Terminating",
                format!("namespace {ns:?} is being deleted"),
            ),
            State::OtherMesh(other) => Condition::new(
                "Ready",
                false,
                "ErrMemberOfOtherMesh",
                format!(
                    "namespace {ns:?} is already a member of the control plane in namespace {other:?} (label {MEMBER_OF_LABEL}={other})"
                ),
            ),
        }
    }
}

fn state(ns: &str, cp: &str, by_name: &BTreeMap<&str, &NamespaceInfo>) -> State {
    match by_name.get(ns) {
        None => State::Missing,
        Some(n) if n.terminating => State::Terminating,
        Some(n) => match n.labels.get(MEMBER_OF_LABEL) {
            Some(other) if other != cp => State::OtherMesh(other.clone()),
            _ => State::Configured,
        },
    }
}

/// Namespaces `*` leaves out, as OSSM does: the platform's own (`kube`,
/// `openshift`, `kube-*`, `openshift-*`). Naming one explicitly still works.
pub fn is_system_namespace(ns: &str) -> bool {
    ["kube", "openshift"]
        .iter()
        .any(|p| ns == *p || ns.strip_prefix(p).is_some_and(|r| r.starts_with('-')))
}

/// Does this member object join `cp` (by namespace; the name is checked apart)?
fn refers_to(m: &ServiceMeshMember, cp: &str) -> bool {
    m.spec.control_plane_ref.namespace == cp
}

/// Computes the plan. Pure: same input, same plan.
pub fn plan(input: &PlanInput) -> Plan {
    let cp = input.control_plane_namespace;
    let by_name: BTreeMap<&str, &NamespaceInfo> = input
        .namespaces
        .iter()
        .map(|n| (n.name.as_str(), n))
        .collect();
    let ours: Vec<&ServiceMeshMember> = input.members.iter().filter(|m| refers_to(m, cp)).collect();
    let multitenant = input.roll.is_some() || !ours.is_empty();
    let mut out = Plan::default();
    if !multitenant {
        out.unlabel = labelled_ours(input);
        out.delete_policies = input.owned_policies.iter().filter_map(key_of).collect();
        return out;
    }

    // The roll's spec in force: the current one if valid, else the last good.
    let (spec, invalid) = match input.roll {
        Some(r) => match r.spec.validate() {
            Ok(()) => (Some(r.spec.clone()), None),
            Err(e) => (input.last_good.cloned(), Some(e)),
        },
        None => (None, None),
    };
    out.spec_in_force = spec.clone();

    // Requested members: named (refused if in another mesh), `*` and selectors
    // (which skip namespaces of other meshes), member objects.
    let mut requested: BTreeSet<String> = BTreeSet::new();
    let other_mesh = |n: &NamespaceInfo| n.labels.get(MEMBER_OF_LABEL).is_some_and(|o| o != cp);
    if let Some(spec) = &spec {
        for m in &spec.members {
            if m == ALL_NAMESPACES {
                requested.extend(
                    input
                        .namespaces
                        .iter()
                        .filter(|n| !other_mesh(n) && !is_system_namespace(&n.name))
                        .map(|n| n.name.clone()),
                );
            } else {
                requested.insert(m.clone());
            }
        }
        let selectors: Vec<_> = spec
            .member_selectors
            .iter()
            .filter_map(|s| s.to_selector("").ok())
            .collect();
        requested.extend(
            input
                .namespaces
                .iter()
                .filter(|n| !other_mesh(n) && selectors.iter().any(|s| s.matches(&n.labels)))
                .map(|n| n.name.clone()),
        );
    }
    for m in &ours {
        if member_ok(m, input.smcp_name).is_none() {
            requested.insert(namespace_of(m));
        }
    }
    requested.remove(cp);

    let states: BTreeMap<String, State> = requested
        .iter()
        .map(|ns| (ns.clone(), state(ns, cp, &by_name)))
        .collect();
    let configured: Vec<String> = states
        .iter()
        .filter(|(_, s)| **s == State::Configured)
        .map(|(n, _)| n.clone())
        .collect();
    let mut scope: BTreeSet<String> = configured.iter().cloned().collect();
    scope.insert(cp.to_string());

    // The control-plane namespace is labelled too: the mesh NetworkPolicy
    // admits traffic from it by that label.
    out.label = scope
        .iter()
        .filter(|ns| {
            by_name.get(ns.as_str()).is_some_and(|n| {
                !n.terminating && n.labels.get(MEMBER_OF_LABEL).map(String::as_str) != Some(cp)
            })
        })
        .cloned()
        .collect();
    out.unlabel = labelled_ours(input)
        .into_iter()
        .filter(|ns| !scope.contains(ns))
        .collect();

    let desired: Vec<NetworkPolicy> = if input.manage_network_policy {
        scope
            .iter()
            .filter(|ns| by_name.get(ns.as_str()).is_some_and(|n| !n.terminating))
            .flat_map(|ns| policies(ns, cp, input.smcp_name))
            .collect()
    } else {
        Vec::new()
    };
    let existing: BTreeMap<(String, String), &NetworkPolicy> = input
        .owned_policies
        .iter()
        .filter_map(|p| Some((key_of(p)?, p)))
        .collect();
    out.ensure_policies = desired
        .iter()
        .filter(|d| {
            let k = key_of(d).unwrap_or_default();
            existing
                .get(&k)
                .is_none_or(|e| e.spec != d.spec || e.metadata.labels != d.metadata.labels)
        })
        .cloned()
        .collect();
    let wanted: BTreeSet<(String, String)> = desired.iter().filter_map(key_of).collect();
    out.delete_policies = existing
        .keys()
        .filter(|k| !wanted.contains(*k))
        .cloned()
        .collect();

    if let Some(roll) = input.roll {
        out.roll_status = Some(roll_status(roll, &states, &configured, invalid));
    }
    out.member_statuses = ours
        .iter()
        .map(|m| {
            let ns = namespace_of(m);
            let name = m.metadata.name.clone().unwrap_or_default();
            let ready = match member_ok(m, input.smcp_name) {
                Some(c) => c,
                None => states
                    .get(&ns)
                    .map(|s| s.condition(&ns))
                    .unwrap_or_else(|| {
                        Condition::new(
                            "Ready",
                            false,
                            "ErrControlPlaneNamespace",
                            format!("namespace {ns:?} is the control plane's own namespace"),
                        )
                    }),
            };
            let r = &m.spec.control_plane_ref;
            let status = ServiceMeshMemberStatus {
                observed_generation: m.metadata.generation,
                annotations: BTreeMap::from([(
                    "controlPlaneRef".to_string(),
                    format!("{}/{}", r.namespace, r.name),
                )]),
                conditions: vec![Condition::new("Reconciled", true, "Reconciled", ""), ready],
            };
            ((ns, name), status)
        })
        .collect();
    out.scope = Some(scope);
    out
}

/// `None` when the member object is well formed for this control plane, else
/// the `Ready=False` condition saying why not.
fn member_ok(m: &ServiceMeshMember, smcp: &str) -> Option<Condition> {
    let name = m.metadata.name.as_deref().unwrap_or_default();
    let r = &m.spec.control_plane_ref;
    if name != DEFAULT_NAME {
        return Some(Condition::new(
            "Ready",
            false,
            "InvalidName",
            format!("a ServiceMeshMember must be named {DEFAULT_NAME:?}, not {name:?}"),
        ));
    }
    if r.name != smcp {
        return Some(Condition::new(
            "Ready",
            false,
            "ErrSMCPMissing",
            format!(
                "ServiceMeshControlPlane {:?} does not exist in namespace {:?} (it has {smcp:?})",
                r.name, r.namespace
            ),
        ));
    }
    None
}

fn namespace_of(m: &ServiceMeshMember) -> String {
    m.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

fn key_of(p: &NetworkPolicy) -> Option<(String, String)> {
    Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?))
}

/// Live namespaces labelled member of this control plane, but the
/// control-plane namespace itself: it always belongs to its own mesh (the
/// OSSM overlay ships it labelled, so its gateways are injected).
fn labelled_ours(input: &PlanInput) -> Vec<String> {
    input
        .namespaces
        .iter()
        .filter(|n| {
            !n.terminating
                && n.name != input.control_plane_namespace
                && n.labels.get(MEMBER_OF_LABEL).map(String::as_str)
                    == Some(input.control_plane_namespace)
        })
        .map(|n| n.name.clone())
        .collect()
}

fn roll_status(
    roll: &ServiceMeshMemberRoll,
    states: &BTreeMap<String, State>,
    configured: &[String],
    invalid: Option<super::member::MemberError>,
) -> ServiceMeshMemberRollStatus {
    let of = |want: fn(&State) -> bool| -> Vec<String> {
        states
            .iter()
            .filter(|(_, s)| want(s))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let pending = of(|s| matches!(s, State::Missing | State::OtherMesh(_)));
    let terminating = of(|s| *s == State::Terminating);
    let ready = match (&invalid, pending.is_empty() && terminating.is_empty()) {
        (Some(e), _) => Condition::new(
            "Ready",
            false,
            "InvalidSpec",
            format!("{e}; the last valid member list stays in force"),
        ),
        (None, true) => Condition::new(
            "Ready",
            true,
            "Configured",
            "All namespaces have been configured successfully",
        ),
        (None, false) => {
            let why: Vec<String> = states
                .iter()
                .filter(|(_, s)| **s != State::Configured)
                .filter_map(|(n, s)| s.condition(n).message)
                .collect();
            Condition::new("Ready", false, "ReconcileError", why.join("; "))
        }
    };
    ServiceMeshMemberRollStatus {
        observed_generation: roll.metadata.generation,
        annotations: BTreeMap::from([(
            CONFIGURED_MEMBER_COUNT.to_string(),
            format!("{}/{}", configured.len(), states.len()),
        )]),
        members: states.keys().cloned().collect(),
        configured_members: configured.to_vec(),
        pending_members: pending,
        terminating_members: terminating,
        conditions: vec![ready],
        member_statuses: states
            .iter()
            .map(|(n, s)| MemberStatusSummary {
                namespace: n.clone(),
                conditions: vec![s.condition(n)],
            })
            .collect(),
    }
}

/// Gives each condition of `next` its `lastTransitionTime`: the one `prev` had
/// for the same type when the status did not change, else `now`. So an
/// unchanged status stays byte-equal (no write) and a change is dated.
pub fn stamp_transitions(prev: &[Condition], next: &mut [Condition], now: &str) {
    for c in next.iter_mut() {
        let before = prev.iter().find(|p| p.type_ == c.type_);
        c.last_transition_time = match before {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => None,
        }
        .or_else(|| Some(now.to_string()));
    }
}

/// [`stamp_transitions`] over a roll's conditions and its members' conditions.
pub fn stamp_roll(
    prev: Option<&ServiceMeshMemberRollStatus>,
    next: &mut ServiceMeshMemberRollStatus,
    now: &str,
) {
    let none = ServiceMeshMemberRollStatus::default();
    let prev = prev.unwrap_or(&none);
    stamp_transitions(&prev.conditions, &mut next.conditions, now);
    for m in &mut next.member_statuses {
        let before = prev
            .member_statuses
            .iter()
            .find(|p| p.namespace == m.namespace)
            .map(|p| p.conditions.as_slice())
            .unwrap_or_default();
        stamp_transitions(before, &mut m.conditions, now);
    }
}

/// The NetworkPolicies OSSM puts in each member (and the control-plane)
/// namespace: `istio-mesh-<smcp>` admits pods of member namespaces,
/// `istio-expose-route-<smcp>` admits the router to pods labelled
/// `maistra.io/expose-route: "true"`.
pub fn policies(ns: &str, cp: &str, smcp: &str) -> [NetworkPolicy; 2] {
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(ns.to_string()),
        labels: Some(BTreeMap::from([
            (MEMBER_OF_LABEL.to_string(), cp.to_string()),
            (OWNER_LABEL.to_string(), cp.to_string()),
            (OWNER_NAME_LABEL.to_string(), smcp.to_string()),
            ("app".to_string(), "istio".to_string()),
            ("release".to_string(), "istio".to_string()),
        ])),
        ..Default::default()
    };
    let from_ns = |k: &str, v: &str| NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(K8sSelector {
                match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mesh = NetworkPolicy {
        metadata: meta(format!("istio-mesh-{smcp}")),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(K8sSelector::default()),
            ingress: Some(vec![from_ns(MEMBER_OF_LABEL, cp)]),
            policy_types: Some(vec!["Ingress".into()]),
            ..Default::default()
        }),
    };
    let route = NetworkPolicy {
        metadata: meta(format!("istio-expose-route-{smcp}")),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(K8sSelector {
                match_labels: Some(BTreeMap::from([(
                    EXPOSE_ROUTE_LABEL.to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            }),
            ingress: Some(vec![from_ns(INGRESS_POLICY_GROUP_LABEL, "ingress")]),
            policy_types: Some(vec!["Ingress".into()]),
            ..Default::default()
        }),
    };
    [mesh, route]
}

#[cfg(test)]
mod tests;
