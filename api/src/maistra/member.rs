//! `maistra.io/v1` ServiceMeshMemberRoll and ServiceMeshMember: which namespaces
//! belong to a control plane.
//!
//! The roll (named `default`, in the control-plane namespace) lists members by
//! name (`*`: every namespace) and, as in OSSM 2.4, by label selectors; a
//! ServiceMeshMember (named `default`, in the member namespace) adds its own
//! namespace. What follows from them is computed by [`super::membership::plan`].
//! Field names and status layout are OSSM's, so `oc get smmr` columns and
//! scripts reading `.status.configuredMembers` keep working.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meshconfig::{is_dns_label, LabelSelector, LabelSelectorRequirement, SelectorOperator};

/// API group of the OSSM membership objects.
pub const GROUP: &str = "maistra.io";
/// The only name OSSM accepts for a roll or a member object.
pub const DEFAULT_NAME: &str = "default";
/// Namespace label naming the control-plane namespace a namespace belongs to.
pub const MEMBER_OF_LABEL: &str = "maistra.io/member-of";
/// `spec.members` entry meaning every namespace.
pub const ALL_NAMESPACES: &str = "*";

/// A bad roll or member object: which field, which value, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} {reason}")]
pub struct MemberError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

fn bad(field: String, value: &str, reason: &str) -> MemberError {
    MemberError {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Spec of a `ServiceMeshMemberRoll`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "maistra.io",
    version = "v1",
    kind = "ServiceMeshMemberRoll",
    plural = "servicemeshmemberrolls",
    shortname = "smmr",
    namespaced,
    status = "ServiceMeshMemberRollStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.annotations.configuredMemberCount"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceMeshMemberRollSpec {
    /// Namespace names; `*` selects every namespace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Namespaces whose labels match any of these selectors are members too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_selectors: Vec<MemberSelector>,
}

/// A Kubernetes label selector as written in the roll. Operators are checked
/// when the roll is reconciled, not when it is parsed, so a typo is reported
/// in the roll's status instead of hiding the whole object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MemberSelector {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<MemberSelectorRequirement>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MemberSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A status condition (`Ready`, `Reconciled`) with OSSM's fields.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<String>,
}

impl Condition {
    pub fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: Some(reason.into()),
            message: (!message.is_empty()).then_some(message),
            last_transition_time: None,
        }
    }
}

/// Conditions of one member namespace, as the roll's status lists them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MemberStatusSummary {
    pub namespace: String,
    pub conditions: Vec<Condition>,
}

/// Status of a `ServiceMeshMemberRoll` (OSSM 2.x layout).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceMeshMemberRollStatus {
    pub observed_generation: Option<i64>,
    /// `configuredMemberCount`: `configured/total`.
    pub annotations: BTreeMap<String, String>,
    /// Every requested member namespace.
    pub members: Vec<String>,
    pub configured_members: Vec<String>,
    pub pending_members: Vec<String>,
    pub terminating_members: Vec<String>,
    pub conditions: Vec<Condition>,
    pub member_statuses: Vec<MemberStatusSummary>,
}

/// Spec of a `ServiceMeshMember`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "maistra.io",
    version = "v1",
    kind = "ServiceMeshMember",
    plural = "servicemeshmembers",
    shortname = "smm",
    namespaced,
    status = "ServiceMeshMemberStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Control Plane","type":"string","jsonPath":".status.annotations.controlPlaneRef"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceMeshMemberSpec {
    pub control_plane_ref: ControlPlaneRef,
}

/// The ServiceMeshControlPlane a member joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ControlPlaneRef {
    pub name: String,
    pub namespace: String,
}

/// Status of a `ServiceMeshMember`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceMeshMemberStatus {
    pub observed_generation: Option<i64>,
    /// `controlPlaneRef`: `namespace/name`.
    pub annotations: BTreeMap<String, String>,
    pub conditions: Vec<Condition>,
}

impl ServiceMeshMemberRollSpec {
    /// Checks member names and selector operators; the first problem found.
    pub fn validate(&self) -> Result<(), MemberError> {
        for (i, m) in self.members.iter().enumerate() {
            if m != ALL_NAMESPACES && !is_dns_label(m) {
                return Err(bad(
                    format!("spec.members[{i}]"),
                    m,
                    "is not a namespace name (a DNS-1123 label: lowercase letters, digits and '-', at most 63) nor \"*\"",
                ));
            }
        }
        for (i, s) in self.member_selectors.iter().enumerate() {
            s.to_selector(&format!("spec.memberSelectors[{i}]"))?;
        }
        Ok(())
    }
}

impl MemberSelector {
    /// The checked selector; `field` names it in the error.
    pub fn to_selector(&self, field: &str) -> Result<LabelSelector, MemberError> {
        let mut match_expressions = Vec::new();
        for (j, r) in self.match_expressions.iter().enumerate() {
            let at = format!("{field}.matchExpressions[{j}]");
            let operator = match r.operator.as_str() {
                "In" => SelectorOperator::In,
                "NotIn" => SelectorOperator::NotIn,
                "Exists" => SelectorOperator::Exists,
                "DoesNotExist" => SelectorOperator::DoesNotExist,
                other => {
                    return Err(bad(
                        format!("{at}.operator"),
                        other,
                        "is not a selector operator (In, NotIn, Exists, DoesNotExist)",
                    ))
                }
            };
            if r.key.is_empty() {
                return Err(bad(format!("{at}.key"), "", "must not be empty"));
            }
            let needs_values = matches!(operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values == r.values.is_empty() {
                let why = if needs_values {
                    "needs values"
                } else {
                    "takes no values"
                };
                return Err(bad(format!("{at}.operator"), &r.operator, why));
            }
            match_expressions.push(LabelSelectorRequirement {
                key: r.key.clone(),
                operator,
                values: r.values.clone(),
            });
        }
        Ok(LabelSelector {
            match_labels: self.match_labels.clone(),
            match_expressions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_member_name_is_named() {
        let spec = ServiceMeshMemberRollSpec {
            members: vec!["bookinfo".into(), "Bad_NS".into()],
            ..Default::default()
        };
        let e = spec.validate().unwrap_err();
        assert_eq!(e.field, "spec.members[1]");
        assert!(e.to_string().contains("\"Bad_NS\""), "{e}");
    }

    #[test]
    fn bad_operator_is_named() {
        let spec: ServiceMeshMemberRollSpec = serde_json::from_value(serde_json::json!({
            "memberSelectors": [{"matchExpressions": [{"key": "team", "operator": "Within", "values": ["a"]}]}]
        }))
        .unwrap();
        let e = spec.validate().unwrap_err();
        assert_eq!(
            e.field,
            "spec.memberSelectors[0].matchExpressions[0].operator"
        );
        assert!(e.to_string().contains("\"Within\""), "{e}");
    }

    #[test]
    fn exists_with_values_is_refused_and_star_is_fine() {
        let spec: ServiceMeshMemberRollSpec = serde_json::from_value(serde_json::json!({
            "members": ["*"],
            "memberSelectors": [{"matchExpressions": [{"key": "team", "operator": "Exists", "values": ["a"]}]}]
        }))
        .unwrap();
        assert!(spec
            .validate()
            .unwrap_err()
            .reason
            .contains("takes no values"));
        let ok = ServiceMeshMemberRollSpec {
            members: vec!["*".into(), "a-1".into()],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
    }
}
