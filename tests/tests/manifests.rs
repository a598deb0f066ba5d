//! The install manifests (manifests/, kustomize) as a cluster would get them:
//! rendered with `kubectl kustomize`, schema-checked with `kubernetes-validate
//! --strict` for the newest and the oldest Kubernetes we claim, and checked for what
//! the schema cannot see: Istio's injection selectors, least-privilege RBAC, the
//! mesh config accepted by the real parsers, one image name, and the wiring between
//! objects (selectors, ports, flags, mounts).

mod manifests_support;

use anyhow::{ensure, Context, Result};
use manifests_support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

const RENDERS: [&str; 5] = [
    "manifests",
    "manifests/overlays/cni",
    "manifests/overlays/cert-manager",
    "manifests/overlays/egress-gateway",
    MAISTRA,
];
/// OpenShift Service Mesh 2.x compatibility (membership instead of injection labels).
const MAISTRA: &str = "manifests/overlays/maistra";
/// Newest and oldest Kubernetes versions we claim (manifests/README.md). 1.33 is
/// where native sidecars (`nativeSidecars: auto`) are on everywhere.
const K8S_VERSIONS: [&str; 2] = ["1.37.0", "1.33.0"];

/// Writes the objects one per file and runs kubernetes-validate --strict on them.
/// Returns the tool's output lines that are not about cert-manager kinds (whose
/// schemas the tool does not ship).
fn validate(objs: &[Value], version: &str) -> Result<(bool, Vec<String>)> {
    let bin = tool("kubernetes-validate", "kubernetes-validate")?;
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        let p = dir
            .path()
            .join(format!("{i:03}-{}.yaml", o["kind"].as_str().unwrap_or("x")));
        std::fs::write(&p, serde_yaml_ng::to_string(o)?)?;
        files.push(p);
    }
    let out = Command::new(bin)
        .args(["--strict", "--quiet", "-k", version])
        .args(&files)
        .output()
        .context("running kubernetes-validate")?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let other: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(l.contains("Couldn't find schema") && l.contains("cert-manager.io/v1")))
        .map(String::from)
        .collect();
    Ok((out.status.success(), other))
}

#[test]
fn every_rendered_object_passes_strict_schema_validation_on_oldest_and_newest_kubernetes(
) -> Result<()> {
    let mut all: Vec<Value> = Vec::new();
    for dir in RENDERS {
        for o in render(dir)? {
            if !all.contains(&o) {
                all.push(o);
            }
        }
    }
    let kinds: BTreeSet<&str> = all.iter().filter_map(|o| o["kind"].as_str()).collect();
    for k in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "DaemonSet",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        ensure!(kinds.contains(k), "no {k} rendered: {kinds:?}");
    }
    for v in K8S_VERSIONS {
        let (ok, lines) = validate(&all, v)?;
        ensure!(
            ok && lines.is_empty(),
            "Kubernetes {v}: {}",
            lines.join("\n")
        );
    }
    Ok(())
}

#[test]
fn schema_validation_catches_an_unknown_field() -> Result<()> {
    // The check above must be able to fail: one typo in a rendered Deployment.
    let mut objs = render("manifests")?;
    let d = objs
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    d["spec"]["replica"] = 2.into();
    let (ok, lines) = validate(&objs, K8S_VERSIONS[0])?;
    ensure!(!ok, "a Deployment with spec.replica passed: {lines:?}");
    ensure!(lines.iter().any(|l| l.contains("replica")), "{lines:?}");
    Ok(())
}

#[test]
fn crd_kustomization_lists_every_generated_crd_and_they_are_current() -> Result<()> {
    let dir = repo().join("manifests/crds");
    let k: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml"))?)?;
    let listed: BTreeSet<String> = strs(&k["resources"]).into_iter().collect();
    let generated: BTreeSet<String> = mesh_agent::crdgen::render()?
        .into_iter()
        .map(|(name, body)| {
            let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert_eq!(
                on_disk, body,
                "manifests/crds/{name} is stale: run gen-crds"
            );
            name
        })
        .collect();
    ensure!(
        listed == generated,
        "crds/kustomization.yaml lists {listed:?}, gen-crds writes {generated:?}"
    );
    Ok(())
}

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
    let mesh = mesh_webhook::config::parse_mesh_config(&wiring::mesh_text(&objs))?;
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

#[test]
fn validating_webhook_covers_every_mesh_crd_version() -> Result<()> {
    let objs = render("manifests")?;
    let vwc = find(&objs, "ValidatingWebhookConfiguration", "mesh-validator");
    let hook = &vwc["webhooks"][0];
    ensure!(hook["clientConfig"]["service"]["path"] == "/validate");
    ensure!(hook["clientConfig"]["service"]["name"] == "mesh-webhook");
    let mut covered = BTreeSet::new();
    for r in hook["rules"].as_array().context("rules")? {
        ensure!(strs(&r["operations"]) == ["CREATE", "UPDATE"]);
        for g in strs(&r["apiGroups"]) {
            for v in strs(&r["apiVersions"]) {
                for res in strs(&r["resources"]) {
                    covered.insert(format!("{res}.{g}/{v}"));
                }
            }
        }
    }
    let mut want = BTreeSet::new();
    // OSSM's objects are not validated at admission: the agent reports their
    // problems in their status, as OSSM's operator does.
    for crd in
        of_kind(&objs, "CustomResourceDefinition").filter(|c| c["spec"]["group"] != "maistra.io")
    {
        let s = &crd["spec"];
        for v in s["versions"].as_array().context("versions")? {
            want.insert(format!(
                "{}.{}/{}",
                s["names"]["plural"].as_str().unwrap_or(""),
                s["group"].as_str().unwrap_or(""),
                v["name"].as_str().unwrap_or("")
            ));
        }
    }
    ensure!(
        want.len() >= 7 && covered == want,
        "webhook covers {covered:?}, CRDs serve {want:?}"
    );
    Ok(())
}

/// The agent's Gateway API deployment rules (proxy/agent/src/gwcontroller/):
/// GatewayClasses created when missing, and the `<gateway>-<class>` objects in
/// any namespace (a Gateway can be in any), deleted with their Gateway.
fn gateway_deploy() -> [Value; 2] {
    [
        serde_json::json!({"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gatewayclasses"], "verbs": ["create"]}),
        serde_json::json!({"apiGroups": ["", "apps"], "resources": ["serviceaccounts", "services", "deployments"], "verbs": ["get", "list", "create", "patch", "delete"]}),
    ]
}

#[test]
fn rbac_is_least_privilege_without_wildcards() -> Result<()> {
    for dir in RENDERS {
        let objs = render(dir)?;
        for role in of_kind(&objs, "ClusterRole").chain(of_kind(&objs, "Role")) {
            let name = role["metadata"]["name"].as_str().unwrap_or("");
            for rule in role["rules"].as_array().context("rules")? {
                for field in ["verbs", "resources", "apiGroups", "resourceNames"] {
                    ensure!(
                        !strs(&rule[field]).iter().any(|s| s.contains('*')),
                        "{dir}: {name} has a wildcard in {field}"
                    );
                }
                // Writes beyond patch exist only on the webhook's certificate Secret
                // (checked exactly below). Deletes: only the OSSM member
                // NetworkPolicies the agent manages, and the objects it renders
                // for a ServiceMeshControlPlane, by name.
                let named = !strs(&rule["resourceNames"]).is_empty();
                let may_delete = name == "mesh-agent"
                    && (named
                        || (dir == MAISTRA && strs(&rule["resources"]) == ["networkpolicies"])
                        || gateway_deploy().contains(rule));
                ensure!(
                    strs(&rule["verbs"]).iter().all(|v| [
                        "get", "list", "watch", "patch", "create", "update"
                    ]
                    .contains(&v.as_str())
                        || (may_delete && v == "delete")),
                    "{dir}: {name} verbs {:?}",
                    rule["verbs"]
                );
            }
        }
        // Each binding's role exists and its subject is the component's own account.
        for (b, role_kind) in of_kind(&objs, "ClusterRoleBinding")
            .map(|b| (b, "ClusterRole"))
            .chain(of_kind(&objs, "RoleBinding").map(|b| (b, "Role")))
        {
            let name = b["metadata"]["name"].as_str().unwrap_or("");
            ensure!(b["roleRef"]["kind"] == role_kind, "{name} roleRef kind");
            find(
                &objs,
                role_kind,
                b["roleRef"]["name"].as_str().unwrap_or(""),
            );
            ensure!(
                b["subjects"]
                    == serde_json::json!([{"kind": "ServiceAccount", "name": name, "namespace": "istio-system"}]),
                "{name}"
            );
            find(&objs, "ServiceAccount", name);
        }
        let cni = find(&objs, "ClusterRole", "mesh-cni-node");
        ensure!(
            cni["rules"]
                == serde_json::json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
        );
        // The agent's one write role: the ServiceMeshControlPlane's objects in
        // istio-system, every write but create narrowed to a fixed name.
        let agent = find(&objs, "Role", "mesh-agent");
        ensure!(agent["metadata"]["namespace"] == "istio-system");
        for rule in agent["rules"].as_array().context("rules")? {
            let verbs = strs(&rule["verbs"]);
            let writes = verbs
                .iter()
                .any(|v| v != "get" && v != "list" && v != "watch");
            let status = strs(&rule["resources"]) == ["servicemeshcontrolplanes/status"];
            ensure!(
                !writes
                    || status
                    || verbs == ["create"]
                    || !strs(&rule["resourceNames"]).is_empty(),
                "{dir}: mesh-agent writes without resourceNames: {rule}"
            );
        }
        // The agent's cluster-wide write in every install: the statuses of Gateway
        // API objects (the gateway controller reports Accepted/Programmed/...).
        let gateway_status = serde_json::json!({"apiGroups": ["gateway.networking.k8s.io"],
            "resources": ["gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status", "tlsroutes/status", "tcproutes/status"],
            "verbs": ["update", "patch"]});
        let is_write = |x: &Value| {
            strs(&x["verbs"])
                .iter()
                .any(|v| ["patch", "create", "update"].contains(&v.as_str()))
        };
        let agent_cluster_writes: Vec<Value> = find(&objs, "ClusterRole", "mesh-agent")["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|x| is_write(x))
            .collect();
        // (Other agent writes are checked per overlay below: none in the base.)
        ensure!(
            agent_cluster_writes.contains(&gateway_status),
            "{dir}: mesh-agent ClusterRole writes {agent_cluster_writes:?}"
        );
        // And the Gateway API automated deployment: exactly these two rules.
        for rule in gateway_deploy() {
            ensure!(
                agent_cluster_writes.contains(&rule),
                "{dir}: mesh-agent ClusterRole lacks {rule}: {agent_cluster_writes:?}"
            );
        }
        let gateway_api_write = |x: &Value| *x == gateway_status || gateway_deploy().contains(x);
        let writes: Vec<&Value> = of_kind(&objs, "ClusterRole")
            .chain(of_kind(&objs, "Role"))
            .filter(|r| !std::ptr::eq(*r, agent))
            .flat_map(|r| {
                r["rules"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |x| (r, x))
            })
            .filter(|(_, x)| is_write(x) && !gateway_api_write(x))
            .map(|(r, _)| r)
            .collect();
        match dir {
            // Self-managed certificates: the webhook patches its own configurations
            // and writes its own certificate Secret, nothing else.
            "manifests" | "manifests/overlays/cni" | "manifests/overlays/egress-gateway" => {
                let w = find(&objs, "ClusterRole", "mesh-webhook");
                let r = find(&objs, "Role", "mesh-webhook");
                ensure!(r["metadata"]["namespace"] == "istio-system");
                let mut ws = writes.clone();
                ws.dedup();
                ensure!(ws == [w, r], "{dir}: only mesh-webhook may write");
                ensure!(
                    w["rules"]
                        == serde_json::json!([
                            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "resourceNames": ["mesh-sidecar-injector"], "verbs": ["get", "patch"]},
                            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"], "resourceNames": ["mesh-validator"], "verbs": ["get", "patch"]}]),
                    "{dir}: {}",
                    w["rules"]
                );
                // create cannot be narrowed by resourceNames (Kubernetes RBAC), so it
                // is the only unnamed write, and only on Secrets of istio-system.
                ensure!(
                    r["rules"]
                        == serde_json::json!([
                            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mesh-webhook-certs"], "verbs": ["get", "update"]},
                            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]),
                    "{dir}: {}",
                    r["rules"]
                );
            }
            // OSSM: besides the webhook's own writes and the Gateway API
            // statuses, the agent writes exactly the membership: namespace
            // labels, NetworkPolicies, statuses.
            MAISTRA => {
                let a = find(&objs, "ClusterRole", "mesh-agent");
                let agent_writes: Vec<Value> = a["rules"]
                    .as_array()
                    .context("rules")?
                    .iter()
                    .filter(|x| {
                        strs(&x["verbs"])
                            .iter()
                            .any(|v| ["patch", "create", "update", "delete"].contains(&v.as_str()))
                            && !gateway_api_write(x)
                    })
                    .cloned()
                    .collect();
                ensure!(
                    agent_writes
                        == [
                            serde_json::json!({"apiGroups": ["maistra.io"], "resources": ["servicemeshmemberrolls/status", "servicemeshmembers/status"], "verbs": ["patch"]}),
                            serde_json::json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["patch"]}),
                            serde_json::json!({"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch", "get", "create", "update", "delete"]}),
                        ],
                    "{dir}: {agent_writes:?}"
                );
                let mut ws = writes.clone();
                ws.dedup();
                ensure!(
                    ws.iter().all(|r| r["metadata"]["name"] == "mesh-webhook"
                        || r["metadata"]["name"] == "mesh-agent"),
                    "{dir}: only mesh-webhook and mesh-agent may write"
                );
            }
            _ => ensure!(
                writes.is_empty(),
                "{dir}: cert-manager mode needs no writes"
            ),
        }
    }
    Ok(())
}

#[path = "manifests_support/wiring.rs"]
mod wiring;

#[path = "manifests_support/gateways.rs"]
mod gateways;
