//! `ReferenceGrant`: lets objects in other namespaces reference objects in the
//! grant's namespace (a route in `a` → a Service in `b` needs a grant in `b`).
//! [`permits`] is the one decision the translator asks: is this reference allowed?

use crate::networking::common::Extra;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a `ReferenceGrant` (served at `v1beta1`, `v1alpha2`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1beta1",
    kind = "ReferenceGrant",
    plural = "referencegrants",
    shortname = "refgrant",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantSpec {
    pub from: Vec<ReferenceGrantFrom>,
    pub to: Vec<ReferenceGrantTo>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Who may reference: objects of `group`/`kind` in `namespace`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

/// What may be referenced: objects of `group`/`kind` (all, or only `name`) in the
/// grant's namespace.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantTo {
    pub group: String,
    pub kind: String,
    pub name: Option<String>,
}

/// The referencing side of a reference (e.g. an HTTPRoute in namespace `a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefFrom<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// The referenced side (e.g. Service `b/echo`; Secrets and others likewise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefTo<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The core group may be written `""` or `core`.
fn same_group(a: &str, b: &str) -> bool {
    fn norm(g: &str) -> &str {
        if g == "core" {
            ""
        } else {
            g
        }
    }
    norm(a) == norm(b)
}

/// Whether `from` may reference `to`: always within one namespace; across
/// namespaces only when a grant in `to`'s namespace lists both sides (a `to` entry
/// without a name covers every object of that kind).
pub fn permits(grants: &[&ReferenceGrant], from: RefFrom<'_>, to: RefTo<'_>) -> bool {
    if from.namespace == to.namespace {
        return true;
    }
    grants.iter().any(|g| {
        g.metadata.namespace.as_deref().unwrap_or("default") == to.namespace
            && g.spec.from.iter().any(|f| {
                same_group(&f.group, from.group)
                    && f.kind == from.kind
                    && f.namespace == from.namespace
            })
            && g.spec.to.iter().any(|t| {
                same_group(&t.group, to.group)
                    && t.kind == to.kind
                    && t.name.as_deref().is_none_or(|n| n == to.name)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ns: &str, from_ns: &str, to_name: Option<&str>) -> ReferenceGrant {
        let mut g = ReferenceGrant::new(
            "g",
            ReferenceGrantSpec {
                from: vec![ReferenceGrantFrom {
                    group: super::super::common::GROUP.into(),
                    kind: "HTTPRoute".into(),
                    namespace: from_ns.into(),
                }],
                to: vec![ReferenceGrantTo {
                    group: String::new(),
                    kind: "Service".into(),
                    name: to_name.map(Into::into),
                }],
                extra: Extra::new(),
            },
        );
        g.metadata.namespace = Some(ns.into());
        g
    }

    const FROM: RefFrom<'static> = RefFrom {
        group: super::super::common::GROUP,
        kind: "HTTPRoute",
        namespace: "a",
    };

    fn to(ns: &'static str, name: &'static str) -> RefTo<'static> {
        RefTo {
            group: "",
            kind: "Service",
            namespace: ns,
            name,
        }
    }

    #[test]
    fn same_namespace_needs_no_grant() {
        assert!(permits(&[], FROM, to("a", "echo")));
    }

    #[test]
    fn cross_namespace_needs_a_grant_in_the_target_namespace() {
        assert!(!permits(&[], FROM, to("b", "echo")));
        let in_b = grant("b", "a", None);
        assert!(permits(&[&in_b], FROM, to("b", "echo")));
        // A grant in the source namespace does not count.
        let in_a = grant("a", "a", None);
        assert!(!permits(&[&in_a], FROM, to("b", "echo")));
    }

    #[test]
    fn grant_checks_from_namespace_kind_and_name() {
        let only_c = grant("b", "c", None);
        assert!(!permits(&[&only_c], FROM, to("b", "echo")));
        let named = grant("b", "a", Some("echo"));
        assert!(permits(&[&named], FROM, to("b", "echo")));
        assert!(!permits(&[&named], FROM, to("b", "other")));
        let grpc = RefFrom {
            kind: "GRPCRoute",
            ..FROM
        };
        assert!(!permits(&[&named], grpc, to("b", "echo")));
        let core = RefTo {
            group: "core",
            ..to("b", "echo")
        };
        assert!(permits(&[&named], FROM, core));
    }
}
