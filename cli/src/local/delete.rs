//! `meshctl local delete`: removing the objects named in the files — the
//! mesh config a ServiceMeshControlPlane replaced comes back, Secrets and mesh
//! resources leave the agent's folders, pods are torn down (CNI DEL), Services
//! lose their VIPs and published ports.

use anyhow::bail;

use super::apply::{mesh_file, refresh, secret_file, service_file};
use super::manifest::Manifest;
use super::mesh_config::{mesh_base_path, mesh_path};
use super::state::{write_file, RunDir, State};
use super::{gateway, pod};

/// Removes what `m` names; pods that do not come down cleanly are reported
/// at the end, after everything else was removed.
pub(super) fn delete(run: &RunDir, st: &mut State, m: &Manifest) -> anyhow::Result<()> {
    if !m.smcps.is_empty() {
        // The user's own mesh config comes back; the SMCP's PeerAuthentication goes.
        match std::fs::read_to_string(mesh_base_path(run)) {
            Ok(base) => {
                write_file(&mesh_path(run), &base)?;
                let _ = std::fs::remove_file(mesh_base_path(run));
                println!("servicemeshcontrolplane deleted (mesh config restored)");
            }
            Err(_) => println!("servicemeshcontrolplane not found"),
        }
        let pa = serde_json::json!({"kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": gateway::NAMESPACE}});
        let f = mesh_file(run, &pa);
        let ours = std::fs::read_to_string(&f)
            .is_ok_and(|t| t.contains(mesh_api::maistra::smcp_map::OWNER_LABEL));
        if ours {
            std::fs::remove_file(&f)?;
            println!(
                "peerauthentication/default ({}) deleted",
                gateway::NAMESPACE
            );
        }
    }
    for v in &m.secrets {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        match std::fs::remove_file(secret_file(run, ns, name)) {
            Ok(()) => println!("secret/{name} ({ns}) deleted"),
            Err(_) => println!("secret/{name} ({ns}) not found"),
        }
    }
    for (_, v) in &m.mesh {
        let f = mesh_file(run, v);
        let what = format!(
            "{}/{} ({})",
            v["kind"].as_str().unwrap_or_default().to_ascii_lowercase(),
            v["metadata"]["name"].as_str().unwrap_or_default(),
            v["metadata"]["namespace"].as_str().unwrap_or_default()
        );
        match std::fs::remove_file(&f) {
            Ok(()) => println!("{what} deleted"),
            Err(_) => println!("{what} not found"),
        }
    }
    let mut errors = Vec::new();
    for spec in &m.pods {
        if let Some(i) = st
            .pods
            .iter()
            .position(|p| p.name == spec.name && p.namespace == spec.namespace)
        {
            let p = st.pods[i].clone();
            errors.extend(pod::remove(st, run, &p));
            st.pods.remove(i);
            run.save(st)?;
            println!("pod/{} ({}) deleted", p.name, p.namespace);
        }
    }
    for svc in &m.services {
        let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        st.services
            .retain(|s| !(s.name == name && s.namespace == ns));
        let _ = std::fs::remove_file(service_file(run, ns, name));
        println!("service/{name} ({ns}) deleted");
    }
    run.save(st)?;
    refresh(run, st)?;
    if !errors.is_empty() {
        bail!(
            "some pods were not removed cleanly:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(())
}
