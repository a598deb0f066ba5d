//! `mesh-agent`: parses the config, validates it, builds the source and runs.

use clap::{Parser, Subcommand};
use mesh_agent::config::{Config, SourceKind};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mesh-agent",
    version,
    about = "Config-sync agent: Istio config in, per-proxy snapshots out",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CRDs generated from the resource types.
    GenCrds {
        #[arg(long, default_value = "manifests/crds")]
        out: PathBuf,
    },
    /// Validate YAML files as the agent would, printing every finding.
    Validate { files: Vec<PathBuf> },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::GenCrds { out }) => mesh_agent::crdgen::write(&out)
            .map(|names| {
                for n in names {
                    println!("wrote {}", out.join(n).display());
                }
            })
            .map_err(anyhow::Error::from),
        Some(Command::Validate { files }) => validate(&files),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut store = mesh_agent::store::Store::default();
    for f in files {
        store.apply(mesh_agent::source::files::read_file(f));
    }
    let snap = mesh_agent::compile::compile(&store, &Default::default(), 1);
    for w in &snap.warnings {
        println!("{w}");
    }
    for r in &snap.rejected {
        for e in &r.errors {
            println!("{e}");
        }
    }
    anyhow::ensure!(
        snap.rejected.is_empty(),
        "{} resource(s) rejected",
        snap.rejected.len()
    );
    Ok(())
}

fn run(flags: Config) -> anyhow::Result<()> {
    flags.validate()?;
    let mesh = flags.load_mesh()?;
    let cfg = match &mesh {
        Some(m) => {
            if !m.ignored.is_empty() {
                tracing::info!(fields = ?m.ignored, "mesh config fields not used by the mesh");
            }
            flags.with_mesh(m)
        }
        None => flags.clone(),
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (source, kube): (Box<dyn mesh_agent::source::Source>, _) = match cfg.source {
            SourceKind::Files => (
                Box::new(mesh_agent::source::files::FilesSource {
                    dir: cfg.config_dir.clone().unwrap_or_default(),
                    debounce: cfg.debounce(),
                }),
                None,
            ),
            SourceKind::Kubernetes => {
                let k = mesh_agent::source::kubernetes::KubernetesSource::from_env().await?;
                let client = k.client.clone();
                (Box::new(k), Some(client))
            }
        };
        let (settings_tx, settings_rx) =
            tokio::sync::watch::channel(std::sync::Arc::new(cfg.settings()));
        let files = match (flags.mesh_config.clone(), mesh) {
            (Some(path), Some(first)) => Some(mesh_agent::meshfile::watch(
                path,
                first,
                std::time::Duration::from_millis(flags.mesh_reload_ms),
                shutdown.clone(),
            )),
            _ => None,
        };
        if let Some(client) = kube.clone() {
            // Kubernetes: the ServiceMeshControlPlane reconciler owns the settings
            // (the mesh file, with an SMCP over it when there is one).
            let cp = mesh_agent::maistra::controlplane::ControlPlane {
                client,
                namespace: cfg.root_namespace.clone(),
                flags: flags.clone(),
                base: files,
                settings: settings_tx,
                retry: std::time::Duration::from_secs(5),
            };
            tokio::spawn(cp.run(shutdown.clone()));
        } else if let Some(mut files) = files {
            let flags = flags.clone();
            tokio::spawn(async move {
                while files.changed().await.is_ok() {
                    let next = flags.with_mesh(&files.borrow_and_update());
                    let mut check = next.clone();
                    check.mesh_config = None;
                    match check.validate() {
                        Ok(()) => {
                            settings_tx.send_replace(std::sync::Arc::new(next.settings()));
                        }
                        Err(e) => tracing::warn!(error = %e, "mesh config edit rejected; keeping the last good config"),
                    }
                }
            });
        }
        // OpenShift Service Mesh: only member namespaces are in the mesh.
        let settings_rx = match (&kube, cfg.members()) {
            (Some(client), Some(m)) => mesh_agent::maistra::members::start(
                client.clone(),
                m,
                settings_rx,
                shutdown.clone(),
            )
            .await,
            _ => settings_rx,
        };
        // Kubernetes: the CA reviews projected service-account tokens.
        let ca = mesh_agent::agent::ca_service(&cfg, kube.clone())?;
        let running =
            mesh_agent::agent::start_live(&cfg, settings_rx, source, ca, shutdown.clone()).await?;
        // Kubernetes: the Gateway API controller deploys gateways and writes
        // the statuses the translation computes.
        if let (Some(client), true) = (kube.clone(), cfg.gateway_api) {
            mesh_agent::gwcontroller::GatewayController {
                client,
                retry: std::time::Duration::from_secs(5),
            }
            .start(running.shared.snapshots.clone(), shutdown.clone());
        }
        // Tests and scripts read this line to learn the bound ports.
        tracing::info!(
            sync = %running.sync_addr,
            tls = running.tls.is_some(),
            plaintext_config_only = ?running.plaintext_addr,
            "sync port bound"
        );
        // `plaintext=` and `ready=` only with --plaintext-listen (the
        // config-only port) and --ready-listen.
        let plaintext = running
            .plaintext_addr
            .map(|a| format!(" plaintext={a}"))
            .unwrap_or_default();
        let ready = running
            .ready_addr
            .map(|a| format!(" ready={a}"))
            .unwrap_or_default();
        println!(
            "mesh-agent listening sync={} debug={}{plaintext}{ready}",
            running.sync_addr, running.debug_addr
        );
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            sd.cancel();
        });
        running.wait().await?;
        Ok(())
    })
}
