//! RBAC: no wildcards, deletes and writes only where a component needs them
//! (named resources, the agent's Gateway API deployment, the webhook's own
//! certificate), so a compromised component can do as little as possible.

use super::*;

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
