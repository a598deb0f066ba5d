//! `meshctl kube-inject -f FILE [--mesh-config FILE]`: injects the sidecar into the
//! workloads of a YAML file (or stdin with `-f -`) offline, exactly as the webhook
//! would, and writes the YAML to stdout. The logic lives in `mesh_webhook`.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use mesh_webhook::config::parse_mesh_config;
use mesh_webhook::kube_inject::kube_inject;
use mesh_webhook::{InjectContext, MeshConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Kubernetes YAML to inject (`-` reads stdin).
    #[arg(short = 'f', long = "filename")]
    file: String,
    /// Mesh config file (the mesh ConfigMap content); defaults apply without it.
    #[arg(long)]
    mesh_config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mesh = match &args.mesh_config {
        None => MeshConfig::default(),
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
