//! The gateways as installed: `istio-ingressgateway` in every render of the base,
//! `istio-egressgateway` only through `components/egress-gateway` (the
//! `overlays/egress-gateway` render). Each is checked as Istio ships it (labels,
//! Service type and ports, PDB, non-root), as the API server would route it
//! (exactly one injection webhook selects its pods), and as it runs: its pod
//! template injected by mesh-webhook with the shipped mesh config becomes a
//! `mesh-proxy router` pod with no istio-init that exposes every Service port.

use super::*;
use mesh_webhook::inject::{mutate, Workload};
use mesh_webhook::InjectContext;

struct Gateway {
    name: &'static str,
    istio: &'static str,
    service_type: &'static str,
    /// (name, port, targetPort), Istio's.
    ports: &'static [(&'static str, u64, u64)],
}

const INGRESS: Gateway = Gateway {
    name: "istio-ingressgateway",
    istio: "ingressgateway",
    service_type: "LoadBalancer",
    ports: &[
        ("status-port", 15021, 15021),
        ("http2", 80, 8080),
        ("https", 443, 8443),
    ],
};

const EGRESS: Gateway = Gateway {
    name: "istio-egressgateway",
    istio: "egressgateway",
    service_type: "ClusterIP",
    ports: &[("http2", 80, 8080), ("https", 443, 8443)],
};

fn pod_labels(d: &Value) -> Labels {
    labels_of(&d["spec"]["template"]["metadata"]["labels"])
}

/// What the API server sends the webhook for one of the Deployment's pods.
fn pod_of(d: &Value) -> Value {
    let t = &d["spec"]["template"];
    let mut meta = t["metadata"].clone();
    meta["namespace"] = d["metadata"]["namespace"].clone();
    meta["generateName"] =
        format!("{}-5d8f7c-", d["metadata"]["name"].as_str().unwrap_or("")).into();
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]})
}

fn check(objs: &[Value], dir: &str, g: &Gateway) -> Result<()> {
    let name = g.name;
    let d = find(objs, "Deployment", name);
    ensure!(
        d["metadata"]["namespace"] == "istio-system",
        "{dir}: {name} namespace"
    );
    let want = labels(&[("app", name), ("istio", g.istio)]);
    let pl = pod_labels(d);
    for (k, v) in &want {
        ensure!(
            labels_of(&d["metadata"]["labels"]).get(k) == Some(v) && pl.get(k) == Some(v),
            "{dir}: {name} label {k}={v}"
        );
    }
    ensure!(
        pl.get("sidecar.istio.io/inject").map(String::as_str) == Some("true"),
        "{dir}: {name} pods opt in to injection"
    );
    ensure!(
        d["spec"]["template"]["metadata"]["annotations"]["inject.istio.io/templates"] == "gateway",
        "{dir}: {name} asks for the gateway template"
    );
    ensure!(
        selector_matches(&d["spec"]["selector"], &pl),
        "{dir}: {name} selector"
    );
    let spec = &d["spec"]["template"]["spec"];
    let sa = spec["serviceAccountName"]
        .as_str()
        .context("serviceAccountName")?;
    ensure!(
        sa == name,
        "{dir}: {name} runs as its own account, not {sa}"
    );
    find(objs, "ServiceAccount", sa);
    let cs = containers(d);
    ensure!(
        cs.len() == 1 && cs[0]["name"] == "istio-proxy" && is_injected(cs[0]),
        "{dir}: {name}: one istio-proxy placeholder with image: auto"
    );
    let c = cs[0];
    ensure!(
        spec["securityContext"]["runAsNonRoot"] == true
            && c["securityContext"]["runAsNonRoot"] == true
            && spec["securityContext"]["runAsUser"]
                .as_u64()
                .is_some_and(|u| u != 0),
        "{dir}: {name} runs as non-root"
    );
    ensure!(
        c["securityContext"]["allowPrivilegeEscalation"] == false
            && c["securityContext"]["capabilities"]["drop"] == serde_json::json!(["ALL"]),
        "{dir}: {name} container hardening"
    );

    let pdb = find(objs, "PodDisruptionBudget", name);
    ensure!(
        pdb["metadata"]["namespace"] == "istio-system"
            && selector_matches(&pdb["spec"]["selector"], &pl)
            && pdb["spec"]["minAvailable"] == 1
            && d["spec"]["replicas"].as_u64().is_some_and(|r| r >= 2),
        "{dir}: {name} PDB leaves a replica through drains"
    );

    let svc = find(objs, "Service", name);
    ensure!(svc["metadata"]["namespace"] == "istio-system");
    ensure!(
        svc["spec"]["type"] == g.service_type,
        "{dir}: {name} Service type {}",
        svc["spec"]["type"]
    );
    ensure!(
        selector_matches(
            &serde_json::json!({"matchLabels": svc["spec"]["selector"]}),
            &pl
        ),
        "{dir}: {name} Service selects the pods"
    );
    let got: Vec<(String, u64, u64)> = svc["spec"]["ports"]
        .as_array()
        .context("ports")?
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["port"].as_u64().unwrap_or(0),
                p["targetPort"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let want_ports: Vec<(String, u64, u64)> = g
        .ports
        .iter()
        .map(|(n, p, t)| (n.to_string(), *p, *t))
        .collect();
    ensure!(got == want_ports, "{dir}: {name} Service ports {got:?}");

    // Exactly one injection webhook selects these pods in istio-system.
    let ns = find(objs, "Namespace", "istio-system");
    let mut nsl = labels_of(&ns["metadata"]["labels"]);
    nsl.insert("kubernetes.io/metadata.name".into(), "istio-system".into());
    let mwc = find(
        objs,
        "MutatingWebhookConfiguration",
        "mesh-sidecar-injector",
    );
    let hooks: Vec<&str> = mwc["webhooks"]
        .as_array()
        .context("webhooks")?
        .iter()
        .filter(|h| {
            selector_matches(&h["namespaceSelector"], &nsl)
                && selector_matches(&h["objectSelector"], &pl)
        })
        .filter_map(|h| h["name"].as_str())
        .collect();
    // OSSM has one webhook, for member namespaces (istio-system is one).
    let want = if dir == "manifests/overlays/maistra" {
        "sidecar-injector.maistra.io"
    } else {
        "object.sidecar-injector.istio.io"
    };
    ensure!(hooks == [want], "{dir}: {name} pods go to {hooks:?}");

    // Injected with the mesh config as shipped: a gateway, not a sidecar.
    let mesh = mesh_webhook::config::parse_mesh_config(
        find(objs, "ConfigMap", "mesh-config")["data"]["mesh"]
            .as_str()
            .context("mesh")?,
    )?;
    let mut pod = pod_of(d);
    let ctx = InjectContext {
        workload: Some(Workload {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.into(),
        }),
        ..Default::default()
    };
    mutate(&mut pod, &mesh, &ctx).map_err(|e| anyhow::anyhow!("{dir}: {name}: {e}"))?;
    ensure!(
        pod["spec"]["initContainers"].is_null(),
        "{dir}: {name} gets no init container: {}",
        pod["spec"]["initContainers"]
    );
    let p = &pod["spec"]["containers"][0];
    ensure!(
        p["name"] == "istio-proxy"
            && p["image"] == mesh.images.proxy.as_str()
            && strs(&p["command"]) == ["mesh-proxy"]
            && strs(&p["args"]) == ["router"],
        "{dir}: {name} injected as {p}"
    );
    ensure!(
        p["readinessProbe"]["httpGet"]
            == serde_json::json!({"path": "/healthz/ready", "port": 15021}),
        "{dir}: {name} readiness"
    );
    ensure!(
        p["securityContext"]["runAsNonRoot"] == true
            && p["securityContext"]["runAsUser"]
                .as_u64()
                .is_some_and(|u| u != 0),
        "{dir}: {name} stays non-root once injected"
    );
    let exposed: Vec<u64> = p["ports"]
        .as_array()
        .context("injected ports")?
        .iter()
        .filter_map(|x| x["containerPort"].as_u64())
        .collect();
    for (pname, _, target) in g.ports {
        ensure!(
            exposed.contains(target),
            "{dir}: {name} Service port {pname} targets {target}, not exposed: {exposed:?}"
        );
    }
    ensure!(
        exposed.contains(&15090),
        "{dir}: {name} 15090 http-envoy-prom"
    );
    Ok(())
}

#[test]
fn gateways_are_installed_and_injected_as_istio_ships_them() -> Result<()> {
    for dir in RENDERS {
        let objs = render(dir)?;
        check(&objs, dir, &INGRESS)?;
        let egress = dir == "manifests/overlays/egress-gateway";
        if egress {
            check(&objs, dir, &EGRESS)?;
        } else {
            ensure!(
                !objs.iter().any(|o| o["metadata"]["name"] == EGRESS.name),
                "{dir}: the egress gateway is opt-in (components/egress-gateway)"
            );
        }
        // Control-plane pods in istio-system are still never sent to the webhook.
        let mwc = find(
            &objs,
            "MutatingWebhookConfiguration",
            "mesh-sidecar-injector",
        );
        let nsl = labels(&[("kubernetes.io/metadata.name", "istio-system")]);
        for w in of_kind(&objs, "Deployment").chain(of_kind(&objs, "DaemonSet")) {
            let wname = w["metadata"]["name"].as_str().unwrap_or("");
            if wname == INGRESS.name || wname == EGRESS.name {
                continue;
            }
            let pl = pod_labels(w);
            let hit = mwc["webhooks"].as_array().into_iter().flatten().any(|h| {
                selector_matches(&h["namespaceSelector"], &nsl)
                    && selector_matches(&h["objectSelector"], &pl)
            });
            ensure!(!hit, "{dir}: {wname} would be injected");
        }
    }
    Ok(())
}

/// `credentialName` Secrets live in the gateway pod's namespace, which can be any:
/// the agent reads Secrets cluster-wide (manifests/README.md says why).
#[test]
fn agent_reads_secrets_cluster_wide_for_gateway_credentials() -> Result<()> {
    for dir in RENDERS {
        let objs = render(dir)?;
        let role = find(&objs, "ClusterRole", "mesh-agent");
        let verbs: BTreeSet<String> = role["rules"]
            .as_array()
            .context("rules")?
            .iter()
            .filter(|r| {
                strs(&r["apiGroups"]) == [""]
                    && strs(&r["resources"]).contains(&"secrets".to_string())
            })
            .flat_map(|r| strs(&r["verbs"]))
            .collect();
        ensure!(
            verbs == BTreeSet::from(["get".into(), "list".into(), "watch".into()]),
            "{dir}: mesh-agent secrets verbs {verbs:?}"
        );
        let b = find(&objs, "ClusterRoleBinding", "mesh-agent");
        ensure!(b["roleRef"]["name"] == "mesh-agent");
    }
    let readme = std::fs::read_to_string(repo().join("manifests/README.md"))?;
    ensure!(
        readme.contains("credentialName") && readme.contains("secrets"),
        "manifests/README.md explains the agent's Secret access"
    );
    Ok(())
}
