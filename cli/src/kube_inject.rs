//! `meshctl kube-inject -f FILE [--mesh-config FILE | --offline]`: injects the
//! sidecar into the workloads of a YAML file (or stdin with `-f -`) exactly as the
//! webhook would, and writes the YAML to stdout. The logic lives in `mesh_webhook`.
//!
//! The mesh config is, in order: `--mesh-config FILE`; with `--offline`, the
//! defaults; else the cluster's `mesh-config` ConfigMap in `istio-system` (key
//! `mesh`, the file the webhook mounts), like istioctl reads the injector's
//! ConfigMap. With no cluster configured or reachable, the defaults apply and a
//! one-line note goes to stderr, so offline use keeps working.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use mesh_webhook::config::parse_mesh_config;
use mesh_webhook::kube_inject::kube_inject;
use mesh_webhook::{InjectContext, MeshConfig};

use crate::cluster::{Cluster, CONTROL_NS, MESH_CONFIGMAP, MESH_CONFIGMAP_KEY};

#[derive(clap::Args)]
pub struct Args {
    /// Kubernetes YAML to inject (`-` reads stdin).
    #[arg(short = 'f', long = "filename")]
    file: String,
    /// Mesh config file (the mesh ConfigMap content); without it, the cluster's.
    #[arg(long, conflicts_with = "offline")]
    mesh_config: Option<PathBuf>,
    /// Do not ask the cluster: the default mesh config.
    #[arg(long)]
    offline: bool,
    /// Namespace of the mesh config ConfigMap.
    #[arg(long, default_value = CONTROL_NS)]
    istio_namespace: String,
}

/// The mesh ConfigMap of the kubeconfig's cluster; `None` when no cluster is
/// configured or reachable.
fn from_cluster(ns: &str) -> anyhow::Result<Option<MeshConfig>> {
    let text =
        Cluster::connect().and_then(|c| c.configmap_key(ns, MESH_CONFIGMAP, MESH_CONFIGMAP_KEY));
    match text {
        Ok(t) => parse_mesh_config(&t)
            .map(Some)
            .with_context(|| format!("mesh config in ConfigMap {ns}/{MESH_CONFIGMAP}")),
        Err(e) if e.is_offline() => {
            eprintln!("meshctl kube-inject: no cluster ({e}); using the default mesh config");
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context(
            "reading the mesh config from the cluster (is the mesh installed? \
             --mesh-config FILE or --offline inject without it)",
        )),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mesh = match &args.mesh_config {
        None if args.offline => MeshConfig::default(),
        None => from_cluster(&args.istio_namespace)?.unwrap_or_default(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading mesh config {}", p.display()))?;
            parse_mesh_config(&text).with_context(|| format!("mesh config {}", p.display()))?
        }
    };
    let input = if args.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file))?
    };
    let out = kube_inject(&input, &mesh, &InjectContext::default())
        .with_context(|| format!("injecting {}", args.file))?;
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("writing stdout")?;
    Ok(())
}
