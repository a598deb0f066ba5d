//! `meshctl local apply`: what an API server and kubelet do with applied
//! objects, done on files. Namespaces, ServiceAccounts, Services (VIPs and
//! published host ports), Secrets and mesh resources are written where the
//! agent reads them; new pods are created; then name resolution, Service VIP
//! rules and published ports are brought up to date. Mesh resources the agent
//! would reject are refused before anything changes.

use std::path::PathBuf;

use anyhow::{bail, Context};
use mesh_agent::objects::KubeObject;
use mesh_agent::validate::{has_errors, validate};
use mesh_webhook::MeshConfig;
use serde_json::Value;

use super::manifest::{self, Manifest};
use super::mesh_config::{mesh_base_path, mesh_from_text, mesh_path};
use super::state::{write_file, Mode, RunDir, ServiceState, State};
use super::{node, pod, publish, secret, smcp};

/// Refuses mesh resources the agent would reject, with its precise messages.
pub(super) fn check_mesh_resources(m: &Manifest) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    for (at, v) in &m.mesh {
        match KubeObject::from_json(v.clone()) {
            Ok(Some(KubeObject::Istio(r))) => {
                let findings = validate(&r);
                if has_errors(&findings) {
                    for f in findings {
                        errors.push(format!("{at}: {f}"));
                    }
                }
            }
            Ok(Some(KubeObject::GatewayApi(r))) => {
                let findings = mesh_agent::validate::validate_gateway_api(&r);
                if has_errors(&findings) {
                    for f in findings {
                        errors.push(format!("{at}: {f}"));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("{at}: {e}")),
        }
    }
    if !errors.is_empty() {
        bail!("refused (nothing was changed):\n  {}", errors.join("\n  "));
    }
    Ok(())
}

/// `metadata.generation` as an API server keeps it: 1 for a new object, bumped
/// when the spec changes (Gateway API statuses report the generation they saw).
fn generation(old: Option<&Value>, new: &Value) -> i64 {
    match old {
        None => 1,
        Some(o) => {
            let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
            if o["spec"] == new["spec"] {
                g
            } else {
                g + 1
            }
        }
    }
}

/// Where an applied mesh resource is kept (one file per kind, namespace and name).
pub(super) fn mesh_file(run: &RunDir, v: &Value) -> PathBuf {
    let kind = v["kind"].as_str().unwrap_or_default();
    // A Gateway API Gateway must not share a file with an Istio Gateway.
    let gateway_api = v["apiVersion"]
        .as_str()
        .is_some_and(|a| a.starts_with("gateway.networking.k8s.io/"));
    let kind = if gateway_api {
        mesh_api::gatewayapi::key_kind(kind).to_ascii_lowercase()
    } else {
        kind.to_ascii_lowercase()
    };
    let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = v["metadata"]["name"].as_str().unwrap_or_default();
    run.applied_dir().join(format!("{kind}_{ns}_{name}.yaml"))
}

pub(super) fn secret_file(run: &RunDir, ns: &str, name: &str) -> PathBuf {
    run.secrets_dir().join(format!("{ns}_{name}.yaml"))
}

pub(super) fn service_file(run: &RunDir, ns: &str, name: &str) -> PathBuf {
    run.config()
        .join("services")
        .join(format!("{ns}_{name}.yaml"))
}

/// Applies `m` to a running mesh: a ServiceMeshControlPlane rewrites the mesh
/// config first, then everything goes as at `up`.
pub(super) fn apply(run: &RunDir, st: &mut State, m: &Manifest) -> anyhow::Result<()> {
    check_mesh_resources(m)?;
    let mut text = std::fs::read_to_string(mesh_path(run)).unwrap_or_default();
    let mut m = std::borrow::Cow::Borrowed(m);
    // A ServiceMeshControlPlane edit: its mapping over the user's own config
    // (kept aside at the first SMCP), checked before anything changes.
    let base = std::fs::read_to_string(mesh_base_path(run)).unwrap_or_else(|_| text.clone());
    if let Some(s) = smcp::from_objects(&m.smcps, &base)? {
        write_file(&mesh_base_path(run), &base)?;
        text = s.mesh_text;
        write_file(&mesh_path(run), &text)?;
        for n in &s.notes {
            println!("{n}");
        }
        let running: Vec<&str> = st.pods.iter().map(|p| p.name.as_str()).collect();
        for k in &s.gateways {
            if !running.iter().any(|p| p.starts_with(k.name())) {
                println!(
                    "{}: gateways of a ServiceMeshControlPlane start at `up`",
                    k.name()
                );
            }
        }
        if let Some(pa) = s.peer_authentication {
            m.to_mut().mesh.push(("ServiceMeshControlPlane".into(), pa));
        }
        println!(
            "servicemeshcontrolplane configured (mesh config {})",
            mesh_path(run).display()
        );
    }
    let mut mesh = mesh_from_text(&text)?;
    mesh.cni.enabled = st.mode == Mode::Cni;
    apply_with(run, st, &m, &mesh)
}

/// Applies `m` with the mesh config `mesh` (what `up` and `apply` share).
pub(super) fn apply_with(
    run: &RunDir,
    st: &mut State,
    m: &Manifest,
    mesh: &MeshConfig,
) -> anyhow::Result<()> {
    for s in &m.skipped {
        println!("skipped {s} (not used by a local node)");
    }
    for n in &m.notes {
        println!("{n}");
    }
    for (ns, labels) in &m.namespaces {
        st.namespaces.insert(ns.clone(), labels.clone());
    }
    if !m.membership.is_empty() {
        let members = smcp::members(&m.membership, &mut st.namespaces)?;
        println!(
            "servicemeshmemberroll: members {} (pods there get a sidecar with sidecar.istio.io/inject: \"true\")",
            members.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        st.members = Some(members);
    }
    let mut member_mesh;
    let mesh = if st.members.is_some() {
        member_mesh = mesh.clone();
        member_mesh.policy = mesh_api::meshconfig::InjectionPolicy::MemberRoll;
        &member_mesh
    } else {
        mesh
    };
    for ns in m.namespaces.keys() {
        let labels = &st.namespaces[ns];
        let doc = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}});
        write_file(
            &run.config().join("namespaces").join(format!("{ns}.yaml")),
            &serde_yaml_ng::to_string(&doc)?,
        )?;
        println!(
            "namespace/{ns} configured{}",
            if labels.get("istio-injection").map(String::as_str) == Some("enabled") {
                " (istio-injection=enabled)"
            } else {
                ""
            }
        );
    }
    for sa in &m.service_accounts {
        let ns = sa["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = sa["metadata"]["name"].as_str().unwrap_or_default();
        write_file(
            &run.config()
                .join("serviceaccounts")
                .join(format!("{ns}_{name}.yaml")),
            &serde_yaml_ng::to_string(sa)?,
        )?;
    }
    for svc in &m.services {
        let ns = svc["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = svc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let existing = st
            .services
            .iter()
            .position(|s| s.name == name && s.namespace == ns);
        let vip = match svc["spec"]["clusterIP"].as_str() {
            Some("None") => None,
            Some(ip) if ip.parse::<std::net::Ipv4Addr>().is_ok() => Some(ip.to_string()),
            _ => match existing.and_then(|i| st.services[i].vip.clone()) {
                Some(v) => Some(v),
                None => Some(node::allocate_vip(st)?),
            },
        };
        let ports: Vec<(u16, String)> = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p["port"].as_u64()?).ok()?;
                let target = match &p["targetPort"] {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => port.to_string(),
                };
                Some((port, target))
            })
            .collect();
        let published = if publish::is_published(svc) {
            // A `nodePort` written in the Service is the host port; then the
            // port this Service already had; then a free one.
            let mut before = publish::node_ports(svc);
            for (port, node) in &before {
                if let Some(other) = st.services.iter().find(|s| {
                    !(s.name == name && s.namespace == ns)
                        && s.published.iter().any(|(_, h)| h == node)
                }) {
                    bail!(
                        "service {ns}/{name}: port {port} asks for nodePort {node}, already \
                         published for service {}/{}",
                        other.namespace,
                        other.name
                    );
                }
            }
            before.extend(
                existing
                    .map(|i| st.services[i].published.clone())
                    .unwrap_or_default(),
            );
            // Never hand out a host port another published port already has.
            let mut used: Vec<u16> = st
                .services
                .iter()
                .flat_map(|s| s.published.iter().map(|(_, h)| *h))
                .chain(before.iter().map(|(_, h)| *h))
                .collect();
            publish::assign(&ports, &before, || {
                let p = publish::free_port_except(&used)?;
                used.push(p);
                Ok(p)
            })
            .context("choosing a free host port")?
        } else {
            Vec::new()
        };
        let entry = ServiceState {
            name: name.clone(),
            namespace: ns.clone(),
            vip: vip.clone(),
            selector: node::selector(svc),
            ports,
            published,
        };
        match existing {
            Some(i) => st.services[i] = entry,
            None => st.services.push(entry),
        }
        let mut obj = svc.clone();
        obj["spec"]["clusterIP"] = serde_json::json!(vip.clone().unwrap_or_else(|| "None".into()));
        write_file(
            &service_file(run, &ns, &name),
            &serde_yaml_ng::to_string(&obj)?,
        )?;
        let on_host = st
            .services
            .iter()
            .find(|s| s.name == name && s.namespace == ns)
            .map(|s| {
                s.published
                    .iter()
                    .map(|(p, h)| format!(", port {p} on 127.0.0.1:{h}"))
                    .collect::<String>()
            })
            .unwrap_or_default();
        println!(
            "service/{name} ({ns}) {}{on_host}",
            vip.unwrap_or_else(|| "headless".into())
        );
    }
    for v in &m.secrets {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        secret::write(&secret_file(run, ns, name), v)?;
        println!("{}", secret::describe(v));
    }
    for (_, v) in &m.mesh {
        let f = mesh_file(run, v);
        let mut v = v.clone();
        if manifest::is_gateway_api(v["apiVersion"].as_str().unwrap_or_default()) {
            let old = std::fs::read_to_string(&f)
                .ok()
                .and_then(|t| serde_yaml_ng::from_str::<Value>(&t).ok());
            v["metadata"]["generation"] = generation(old.as_ref(), &v).into();
        }
        write_file(&f, &serde_yaml_ng::to_string(&v)?)?;
        println!(
            "{}/{} ({}) configured",
            v["kind"].as_str().unwrap_or_default().to_ascii_lowercase(),
            v["metadata"]["name"].as_str().unwrap_or_default(),
            v["metadata"]["namespace"].as_str().unwrap_or_default()
        );
    }
    run.save(st)?;
    let new: Vec<_> = m
        .pods
        .iter()
        .filter(|p| {
            !st.pods
                .iter()
                .any(|s| s.name == p.name && s.namespace == p.namespace)
        })
        .collect();
    let total = new.len();
    for (i, spec) in new.into_iter().enumerate() {
        let started = std::time::Instant::now();
        let what = pod::create(st, run, spec, mesh, &mut |s| run.save(s))?;
        let p = st.pods.last().context("pod created")?;
        println!(
            "[{}/{total}] pod/{} ({}) ready at {} in {} ms, {what}",
            i + 1,
            p.name,
            p.namespace,
            p.ip.as_deref().unwrap_or("-"),
            started.elapsed().as_millis()
        );
        refresh(run, st)?;
    }
    refresh(run, st)
}

/// ServiceEntry hosts with addresses, from what has been applied.
fn service_entry_hosts(run: &RunDir) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(objs) = manifest::objects(&[run.applied_dir()]) else {
        return out;
    };
    for (_, v) in objs {
        if v["kind"] != "ServiceEntry" {
            continue;
        }
        for addr in v["spec"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let addr = addr.strip_suffix("/32").unwrap_or(addr);
            if addr.parse::<std::net::IpAddr>().is_err() {
                continue;
            }
            for host in v["spec"]["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                out.push((addr.to_string(), host.to_string()));
            }
        }
    }
    out
}

/// Name resolution, Service VIP rules and published ports, after anything changed.
pub(super) fn refresh(run: &RunDir, st: &mut State) -> anyhow::Result<()> {
    let entries = if run.applied_dir().exists() {
        service_entry_hosts(run)
    } else {
        Vec::new()
    };
    node::write_resolution(st, &entries)?;
    node::write_service_rules(st)?;
    publish::sync(run, st)
}
