//! Injection selectors: the injector webhooks select exactly the pods Istio's
//! injector would (a table of namespace and pod labels), and the OSSM overlay
//! sends only member namespaces' pods, so a label's meaning matches Istio's.

use super::*;

type LabelPairs = &'static [(&'static str, &'static str)];

/// Istio's injection decision at the webhook-selector stage, as a table:
/// (namespace, namespace labels, pod labels, injected?). Namespaces carry
/// `kubernetes.io/metadata.name` as the API server sets it.
const INJECTION_TABLE: &[(&str, LabelPairs, LabelPairs, bool)] = &[
    ("app", &[("istio-injection", "enabled")], &[], true),
    (
        "app",
        &[("istio-injection", "enabled")],
        &[("sidecar.istio.io/inject", "true")],
        true,
    ),
    (
        "app",
        &[("istio-injection", "enabled")],
        &[("sidecar.istio.io/inject", "false")],
        false,
    ),
    (
        "app",
        &[("istio-injection", "enabled")],
        &[("istio.io/rev", "canary")],
        true,
    ),
    ("app", &[("istio-injection", "disabled")], &[], false),
    (
        "app",
        &[("istio-injection", "disabled")],
        &[("sidecar.istio.io/inject", "true")],
        false,
    ),
    (
        "app",
        &[("istio-injection", "disabled")],
        &[("istio.io/rev", "default")],
        false,
    ),
    ("app", &[], &[], false),
    ("app", &[], &[("sidecar.istio.io/inject", "true")], true),
    ("app", &[], &[("sidecar.istio.io/inject", "false")], false),
    ("app", &[], &[("istio.io/rev", "default")], true),
    (
        "app",
        &[],
        &[
            ("istio.io/rev", "default"),
            ("sidecar.istio.io/inject", "false"),
        ],
        false,
    ),
    ("app", &[], &[("istio.io/rev", "canary")], false),
    (
        "app",
        &[],
        &[
            ("istio.io/rev", "canary"),
            ("sidecar.istio.io/inject", "true"),
        ],
        false,
    ),
    ("app", &[("istio.io/rev", "default")], &[], true),
    (
        "app",
        &[("istio.io/rev", "default")],
        &[("sidecar.istio.io/inject", "false")],
        false,
    ),
    ("app", &[("istio.io/rev", "canary")], &[], false),
    (
        "app",
        &[("istio.io/rev", "canary")],
        &[("sidecar.istio.io/inject", "true")],
        false,
    ),
    // istio-injection wins over istio.io/rev on a namespace.
    (
        "app",
        &[("istio-injection", "enabled"), ("istio.io/rev", "canary")],
        &[],
        true,
    ),
    (
        "app",
        &[("istio-injection", "disabled"), ("istio.io/rev", "default")],
        &[],
        false,
    ),
    ("app", &[("other", "x")], &[("app", "reviews")], false),
    // Istio's injector ignores kube-system and kube-public whatever the labels.
    ("kube-system", &[("istio-injection", "enabled")], &[], false),
    (
        "kube-system",
        &[],
        &[("sidecar.istio.io/inject", "true")],
        false,
    ),
    ("kube-public", &[("istio.io/rev", "default")], &[], false),
    // Ours never injects the control plane's namespace as a whole (issue 9)...
    (
        "istio-system",
        &[("istio-injection", "enabled")],
        &[],
        false,
    ),
    ("istio-system", &[("istio.io/rev", "default")], &[], false),
    ("istio-system", &[], &[], false),
    (
        "istio-system",
        &[],
        &[("sidecar.istio.io/inject", "false")],
        false,
    ),
    // ...but pods there that opt in by label are: the gateways (issue 16).
    (
        "istio-system",
        &[],
        &[("sidecar.istio.io/inject", "true")],
        true,
    ),
    ("istio-system", &[], &[("istio.io/rev", "default")], true),
];

#[test]
fn injection_selectors_pick_exactly_the_pods_istio_would() -> Result<()> {
    for dir in RENDERS.into_iter().filter(|d| *d != MAISTRA) {
        let objs = render(dir)?;
        let mwc = find(
            &objs,
            "MutatingWebhookConfiguration",
            "mesh-sidecar-injector",
        );
        let hooks = mwc["webhooks"].as_array().context("webhooks")?;
        let names: Vec<String> = hooks
            .iter()
            .map(|h| h["name"].as_str().unwrap_or("").to_string())
            .collect();
        ensure!(
            names
                == [
                    "rev.namespace.sidecar-injector.istio.io",
                    "rev.object.sidecar-injector.istio.io",
                    "namespace.sidecar-injector.istio.io",
                    "object.sidecar-injector.istio.io"
                ],
            "{names:?}"
        );
        for (ns, ns_labels, pod_labels, want) in INJECTION_TABLE {
            let mut nsl = labels(ns_labels);
            nsl.insert("kubernetes.io/metadata.name".into(), ns.to_string());
            let podl = labels(pod_labels);
            let matched: Vec<&str> = hooks
                .iter()
                .filter(|h| {
                    selector_matches(&h["namespaceSelector"], &nsl)
                        && selector_matches(&h["objectSelector"], &podl)
                })
                .filter_map(|h| h["name"].as_str())
                .collect();
            ensure!(
                matched.is_empty() != *want,
                "{dir}: namespace {ns} {ns_labels:?}, pod {pod_labels:?}: want injected={want}, matched {matched:?}"
            );
        }
        for h in hooks {
            let n = &h["name"];
            ensure!(
                h["rules"]
                    == serde_json::json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]),
                "{n} rules"
            );
            ensure!(
                strs(&h["admissionReviewVersions"]) == ["v1", "v1beta1"],
                "{n}"
            );
            ensure!(
                h["sideEffects"] == "None" && h["failurePolicy"] == "Fail",
                "{n}"
            );
            ensure!(h["reinvocationPolicy"] == "Never", "{n}");
            ensure!(
                h["timeoutSeconds"].as_u64().is_some_and(|t| t <= 10),
                "{n} timeout"
            );
            ensure!(
                h["clientConfig"]["service"]
                    == serde_json::json!({"name": "mesh-webhook", "namespace": "istio-system", "path": "/inject", "port": 443}),
                "{n} clientConfig"
            );
        }
    }
    Ok(())
}

/// OSSM: (namespace, its labels, pod labels, sent to the webhook?). Whether a
/// pod sent there is injected depends on its annotation (mesh-webhook decides).
const MAISTRA_TABLE: &[(&str, LabelPairs, LabelPairs, bool)] = &[
    (
        "bookinfo",
        &[("maistra.io/member-of", "istio-system")],
        &[],
        true,
    ),
    (
        "bookinfo",
        &[("maistra.io/member-of", "istio-system")],
        &[("sidecar.istio.io/inject", "false")],
        false,
    ),
    // Istio's labels mean nothing here: membership does.
    (
        "plain",
        &[("istio-injection", "enabled")],
        &[("sidecar.istio.io/inject", "true")],
        false,
    ),
    (
        "theirs",
        &[("maistra.io/member-of", "other-cp")],
        &[],
        false,
    ),
    (
        "kube-system",
        &[("maistra.io/member-of", "istio-system")],
        &[],
        false,
    ),
];

#[test]
fn maistra_overlay_sends_only_member_namespaces_and_injects_by_annotation() -> Result<()> {
    let objs = render(MAISTRA)?;
    let mwc = find(
        &objs,
        "MutatingWebhookConfiguration",
        "mesh-sidecar-injector",
    );
    let hooks = mwc["webhooks"].as_array().context("webhooks")?;
    ensure!(hooks.len() == 1, "one injector webhook: {hooks:?}");
    for (ns, ns_labels, pod_labels, want) in MAISTRA_TABLE {
        let mut nsl = labels(ns_labels);
        nsl.insert("kubernetes.io/metadata.name".into(), ns.to_string());
        let hit = selector_matches(&hooks[0]["namespaceSelector"], &nsl)
            && selector_matches(&hooks[0]["objectSelector"], &labels(pod_labels));
        ensure!(
            hit == *want,
            "namespace {ns} {ns_labels:?}, pod {pod_labels:?}: want sent={want}"
        );
    }
    let mesh = mesh_webhook::config::parse_mesh_config(&super::wiring::mesh_text(&objs))?;
    ensure!(mesh.policy == mesh_api::meshconfig::InjectionPolicy::MemberRoll);
    let agent = find(&objs, "Deployment", "mesh-agent");
    let args = strs(&agent["spec"]["template"]["spec"]["containers"][0]["args"]);
    ensure!(args.contains(&"--maistra-members".to_string()), "{args:?}");
    // The mesh config is the base's but for the policy.
    let body = |f: &str| -> Result<Vec<String>> {
        Ok(std::fs::read_to_string(repo().join(f))?
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("policy:"))
            .map(String::from)
            .collect())
    };
    ensure!(
        body("manifests/base/mesh.yaml")? == body("manifests/overlays/maistra/mesh.yaml")?,
        "overlays/maistra/mesh.yaml differs from base/mesh.yaml beyond policy"
    );
    // The membership CRDs are installed.
    for crd in [
        "servicemeshmemberrolls.maistra.io",
        "servicemeshmembers.maistra.io",
    ] {
        find(&objs, "CustomResourceDefinition", crd);
    }
    Ok(())
}
