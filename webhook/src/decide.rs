//! Whether a pod gets a sidecar, decided the way Istio's injector decides it
//! (`injectRequired` in `pkg/kube/inject/inject.go`), plus the namespace check that
//! the webhook configuration's selectors normally make, so direct calls are right too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use mesh_api::annotations::{self, sidecar};
use mesh_api::maistra::member::MEMBER_OF_LABEL;
use mesh_api::meshconfig::{InjectionPolicy, MeshConfig};

/// Namespaces Istio never injects into.
pub const IGNORED_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(SkipReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    HostNetwork,
    IgnoredNamespace(String),
    /// Namespace labelled `istio-injection=disabled`.
    NamespaceDisabled,
    /// Namespace has neither `istio-injection=enabled` nor `istio.io/rev`, and the
    /// pod did not opt in with the `sidecar.istio.io/inject=true` label.
    NamespaceNotEnabled,
    /// `sidecar.istio.io/inject` label or annotation says no.
    PodOptOut,
    NeverInjectSelector,
    PolicyDisabled,
    /// `policy: memberRoll`: the namespace is not a member of this mesh.
    NotMember,
    /// `policy: memberRoll`: the pod did not opt in.
    NotOptedIn,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::HostNetwork => f.write_str("pod uses host networking"),
            SkipReason::IgnoredNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            SkipReason::NamespaceDisabled => f.write_str("namespace has istio-injection=disabled"),
            SkipReason::NamespaceNotEnabled => {
                f.write_str("namespace has no istio-injection=enabled or istio.io/rev label")
            }
            SkipReason::PodOptOut => write!(f, "{} says no", sidecar::INJECT),
            SkipReason::NeverInjectSelector => f.write_str("pod matches neverInjectSelector"),
            SkipReason::PolicyDisabled => {
                f.write_str("injection policy is disabled and the pod did not opt in")
            }
            SkipReason::NotMember => write!(
                f,
                "namespace is not a member of the mesh (no {MEMBER_OF_LABEL} label naming its control plane)"
            ),
            SkipReason::NotOptedIn => write!(
                f,
                "in a member namespace only pods annotated {}: \"true\" are injected",
                sidecar::INJECT
            ),
        }
    }
}

/// Decides for one pod. `namespace_labels` is `None` when they are unknown (the
/// webhook relies on its namespaceSelector; kube-inject has no namespace).
pub fn decide(
    pod: &Pod,
    namespace_labels: Option<&BTreeMap<String, String>>,
    mesh: &MeshConfig,
) -> Decision {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);

    if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        return Decision::Skip(SkipReason::HostNetwork);
    }
    if let Some(ns) = pod.metadata.namespace.as_deref() {
        if IGNORED_NAMESPACES.contains(&ns) {
            return Decision::Skip(SkipReason::IgnoredNamespace(ns.to_string()));
        }
    }
    if mesh.policy == InjectionPolicy::MemberRoll {
        // OSSM: membership, not the istio-injection/istio.io/rev labels.
        if let Some(ns) = namespace_labels {
            if ns.get(MEMBER_OF_LABEL) != Some(&mesh.root_namespace) {
                return Decision::Skip(SkipReason::NotMember);
            }
        }
    } else if let Some(ns) = namespace_labels {
        match ns.get(annotations::INJECTION).map(String::as_str) {
            Some("disabled") => return Decision::Skip(SkipReason::NamespaceDisabled),
            Some("enabled") => {}
            _ if ns.contains_key(annotations::REV) => {}
            _ if labels.get(sidecar::INJECT).map(String::as_str) == Some("true") => {}
            _ => return Decision::Skip(SkipReason::NamespaceNotEnabled),
        }
    }

    // The label wins over the annotation when present.
    let said = labels
        .get(sidecar::INJECT)
        .or(annotations.get(sidecar::INJECT))
        .and_then(|v| mesh_api::annotations::inject_override(Some(v)));
    let said = said.or_else(|| {
        if mesh.never_inject_selector.iter().any(|s| s.matches(labels)) {
            Some(false)
        } else if mesh
            .always_inject_selector
            .iter()
            .any(|s| s.matches(labels))
        {
            Some(true)
        } else {
            None
        }
    });
    let never_by_selector = said == Some(false)
        && labels
            .get(sidecar::INJECT)
            .or(annotations.get(sidecar::INJECT))
            .is_none();
    match (said, mesh.policy) {
        (Some(true), _) => Decision::Inject,
        (Some(false), _) if never_by_selector => Decision::Skip(SkipReason::NeverInjectSelector),
        (Some(false), _) => Decision::Skip(SkipReason::PodOptOut),
        (None, InjectionPolicy::Enabled) => Decision::Inject,
        (None, InjectionPolicy::Disabled) => Decision::Skip(SkipReason::PolicyDisabled),
        (None, InjectionPolicy::MemberRoll) => Decision::Skip(SkipReason::NotOptedIn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::meshconfig::LabelSelector;

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)], host: bool) -> Pod {
        let m = |p: &[(&str, &str)]| {
            Some(
                p.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let mut p = Pod::default();
        p.metadata.labels = m(labels);
        p.metadata.annotations = m(annotations);
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            host_network: Some(host),
            ..Default::default()
        });
        p
    }

    fn ns(l: &[(&str, &str)]) -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn istio_decisions() {
        let mesh = MeshConfig::default();
        let d = |p: &Pod, n: Option<&BTreeMap<String, String>>| decide(p, n, &mesh);
        assert_eq!(d(&pod(&[], &[], false), None), Decision::Inject);
        assert_eq!(
            d(&pod(&[], &[], true), None),
            Decision::Skip(SkipReason::HostNetwork)
        );
        let off = pod(&[], &[(sidecar::INJECT, "false")], false);
        assert_eq!(d(&off, None), Decision::Skip(SkipReason::PodOptOut));
        // Label wins over annotation, both ways.
        let p = pod(
            &[(sidecar::INJECT, "true")],
            &[(sidecar::INJECT, "false")],
            false,
        );
        assert_eq!(d(&p, None), Decision::Inject);
        let p = pod(
            &[(sidecar::INJECT, "false")],
            &[(sidecar::INJECT, "true")],
            false,
        );
        assert_eq!(d(&p, None), Decision::Skip(SkipReason::PodOptOut));
        // Namespace labels.
        let enabled = ns(&[("istio-injection", "enabled")]);
        let rev = ns(&[("istio.io/rev", "canary")]);
        let disabled = ns(&[("istio-injection", "disabled")]);
        let plain = ns(&[]);
        assert_eq!(d(&pod(&[], &[], false), Some(&enabled)), Decision::Inject);
        assert_eq!(d(&pod(&[], &[], false), Some(&rev)), Decision::Inject);
        assert_eq!(
            d(&pod(&[], &[], false), Some(&disabled)),
            Decision::Skip(SkipReason::NamespaceDisabled)
        );
        assert_eq!(
            d(&pod(&[], &[], false), Some(&plain)),
            Decision::Skip(SkipReason::NamespaceNotEnabled)
        );
        let opt_in = pod(&[(sidecar::INJECT, "true")], &[], false);
        assert_eq!(d(&opt_in, Some(&plain)), Decision::Inject);
        let mut sys = pod(&[], &[], false);
        sys.metadata.namespace = Some("kube-system".into());
        assert!(matches!(
            d(&sys, None),
            Decision::Skip(SkipReason::IgnoredNamespace(_))
        ));
    }

    #[test]
    fn selectors_and_policy() {
        let mesh = MeshConfig {
            never_inject_selector: vec![LabelSelector {
                match_labels: BTreeMap::from([("job".into(), "batch".into())]),
                ..Default::default()
            }],
            always_inject_selector: vec![LabelSelector {
                match_labels: BTreeMap::from([("mesh".into(), "yes".into())]),
                ..Default::default()
            }],
            policy: InjectionPolicy::Disabled,
            ..Default::default()
        };
        let d = |p: &Pod| decide(p, None, &mesh);
        assert_eq!(
            d(&pod(&[("job", "batch")], &[], false)),
            Decision::Skip(SkipReason::NeverInjectSelector)
        );
        assert_eq!(
            d(&pod(&[("job", "batch"), ("mesh", "yes")], &[], false)),
            Decision::Skip(SkipReason::NeverInjectSelector),
            "never is checked first"
        );
        assert_eq!(d(&pod(&[("mesh", "yes")], &[], false)), Decision::Inject);
        assert_eq!(
            d(&pod(&[], &[], false)),
            Decision::Skip(SkipReason::PolicyDisabled)
        );
        assert_eq!(
            d(&pod(
                &[("job", "batch")],
                &[(sidecar::INJECT, "yes")],
                false
            )),
            Decision::Inject,
            "an explicit annotation beats the selectors"
        );
    }

    #[test]
    fn member_roll_policy_injects_only_opted_in_pods_of_members() {
        let mesh = MeshConfig {
            policy: InjectionPolicy::MemberRoll,
            ..Default::default()
        };
        let d = |p: &Pod, n: Option<&BTreeMap<String, String>>| decide(p, n, &mesh);
        let member = ns(&[(MEMBER_OF_LABEL, "istio-system")]);
        let other = ns(&[
            (MEMBER_OF_LABEL, "other-cp"),
            ("istio-injection", "enabled"),
        ]);
        let labelled_only = ns(&[("istio-injection", "enabled")]);
        let opted = pod(&[], &[(sidecar::INJECT, "true")], false);
        let plain = pod(&[], &[], false);
        assert_eq!(d(&opted, Some(&member)), Decision::Inject);
        assert_eq!(
            d(&plain, Some(&member)),
            Decision::Skip(SkipReason::NotOptedIn)
        );
        assert_eq!(
            d(&opted, Some(&other)),
            Decision::Skip(SkipReason::NotMember)
        );
        assert_eq!(
            d(&opted, Some(&labelled_only)),
            Decision::Skip(SkipReason::NotMember)
        );
        // The webhook (namespace labels unknown) relies on its namespaceSelector.
        assert_eq!(d(&opted, None), Decision::Inject);
        assert_eq!(d(&plain, None), Decision::Skip(SkipReason::NotOptedIn));
        let no = pod(&[], &[(sidecar::INJECT, "false")], false);
        assert_eq!(d(&no, Some(&member)), Decision::Skip(SkipReason::PodOptOut));
        let parsed: MeshConfig = serde_json::from_str(r#"{"policy": "memberRoll"}"#).unwrap();
        assert_eq!(parsed.policy, InjectionPolicy::MemberRoll);
    }
}
