//! `mesh-proxy` binary: parse and validate the configuration, bind, run.

use clap::Parser;
use mesh_proxy::app_probe::Probers;
use mesh_proxy::sched::{self, CpuPolicy};
use mesh_proxy::Proxy;

#[derive(Parser)]
#[command(
    name = "mesh-proxy",
    version,
    about = "Istio-compatible sidecar and gateway proxy",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: mesh_proxy::config::Args,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run as a sidecar (what the injected istio-proxy container runs).
    Sidecar(mesh_proxy::config::Args),
    /// Run as a gateway (Istio's `proxy router`): no capture, listeners from
    /// the Gateway servers that select this pod.
    Router(mesh_proxy::config::Args),
    /// Wait until the local sidecar is ready (holdApplicationUntilProxyStarts).
    Wait {
        #[arg(long, default_value = "http://127.0.0.1:15021/healthz/ready")]
        url: String,
        #[arg(long, default_value_t = 60)]
        timeout_seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROXY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (args, mode) = match cli.command {
        Some(Command::Sidecar(a)) => (a, mesh_proxy::config::Mode::Sidecar),
        Some(Command::Router(a)) => (a, mesh_proxy::config::Mode::Router),
        Some(Command::Wait {
            url,
            timeout_seconds,
        }) => {
            return mesh_proxy::wait::until_ready(
                &url,
                std::time::Duration::from_secs(timeout_seconds),
            );
        }
        None => (cli.args, mesh_proxy::config::Mode::Sidecar),
    };
    let cfg = match args.validate() {
        Ok(mut c) => {
            c.mode = mode;
            c
        }
        Err(e) => {
            eprintln!("mesh-proxy: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    let probers = match Probers::parse(&std::env::var("ISTIO_KUBE_APP_PROBERS").unwrap_or_default())
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mesh-proxy: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    let app_metrics = match mesh_proxy::app_metrics::AppMetrics::from_env_value(
        &std::env::var("ISTIO_PROMETHEUS_ANNOTATIONS").unwrap_or_default(),
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mesh-proxy: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    // Before the runtime exists, so every thread it starts inherits the class.
    let policy = cfg.cpu_policy;
    let batch = policy != CpuPolicy::Normal
        && match sched::set_current(sched::Class::Batch) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("mesh-proxy: cannot use SCHED_BATCH ({e}); staying in SCHED_OTHER");
                false
            }
        };
    let rt = if cfg.concurrency == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.concurrency)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        if batch && policy == CpuPolicy::Adaptive {
            tokio::spawn(sched::govern(std::time::Duration::from_secs(1)));
        }
        let proxy = Proxy::bind_with(cfg, probers, app_metrics).await?;
        let b = proxy.bound();
        match (b.outbound, b.inbound) {
            (Some(o), Some(i)) => println!(
                "mesh-proxy bound outbound={o} inbound={i} admin={} health={} prometheus={} status={}",
                b.admin, b.health, b.prometheus, b.status
            ),
            _ => println!(
                "mesh-proxy bound router admin={} health={} prometheus={} status={}",
                b.admin, b.health, b.prometheus, b.status
            ),
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        proxy
            .run(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await;
        Ok(())
    })
}
