//! The mesh config of a local mesh: where its file lives in the run directory
//! (the agent re-reads it, `apply` rewrites it for a ServiceMeshControlPlane),
//! and how its text becomes the `MeshConfig` the injector and the agent use.
//! Shared by `up` and `apply`/`delete`, so it imports neither.

use std::path::PathBuf;

use anyhow::Context;
use mesh_webhook::config::parse_mesh_config;
use mesh_webhook::MeshConfig;

use super::node;
use super::state::RunDir;

/// The mesh config `text` (empty: the defaults), pointed at this node's agent.
pub(super) fn mesh_from_text(text: &str) -> anyhow::Result<MeshConfig> {
    let mut mesh = if text.trim().is_empty() {
        MeshConfig::default()
    } else {
        parse_mesh_config(text).context("mesh config")?
    };
    mesh.agent_address = format!("{}:15012", node::GATEWAY);
    Ok(mesh)
}

/// The mesh config in force (the agent's `--mesh-config`).
pub(super) fn mesh_path(run: &RunDir) -> PathBuf {
    run.0.join("mesh.yaml")
}

/// The mesh config without the ServiceMeshControlPlane, once one was applied.
pub(super) fn mesh_base_path(run: &RunDir) -> PathBuf {
    run.0.join("mesh-base.yaml")
}
