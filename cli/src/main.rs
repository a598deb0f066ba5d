//! `meshctl`: the mesh's command-line tool. Each subcommand lives in its own module;
//! this file only parses arguments and dispatches.

mod analyze;
mod cluster;
mod dashboard;
mod demo;
mod http_get;
mod kube_inject;
mod local;
mod proxy_config;
mod proxy_status;
mod version;
mod zipkin;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Operate an Istio-compatible sidecar mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bookinfo on a local mesh: an 80/20 reviews split and header routing, shown.
    Demo(demo::Args),
    /// The echo test app (what local-mode and demo pods run in place of app containers).
    #[command(hide = true)]
    Echo(mesh_runtime::echo::Args),
    /// Run Kubernetes YAML and mesh config on this machine (up/apply/delete/pods/exec/logs/down).
    Local(local::Args),
    /// Per-proxy config sync status from the agents (SYNCED/STALE/NOT SENT/ERROR).
    ProxyStatus(proxy_status::Args),
    /// Inject the istio-proxy sidecar into workload YAML offline (`-f -` for stdin).
    KubeInject(kube_inject::Args),
    /// Offline checks of Kubernetes/Istio YAML, like `istioctl analyze` (exit 79 on errors).
    Analyze(analyze::Args),
    /// What one sidecar has in force: clusters, listeners, routes, endpoints (like `istioctl proxy-config`).
    ProxyConfig(proxy_config::Args),
    /// The mesh's service graph, workload rates and traces as one web page on loopback.
    Dashboard(dashboard::Args),
    /// Client version and the versions of the agents, webhooks and proxies it can reach.
    Version(version::Args),
}

fn main() -> anyhow::Result<()> {
    // kube_client logs request failures itself; ours name the object instead.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo(args) => demo::run(args),
        Command::Echo(args) => mesh_runtime::echo::main_with(args),
        Command::Local(args) => local::run(args),
        Command::ProxyStatus(args) => proxy_status::run(args),
        Command::KubeInject(args) => kube_inject::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::ProxyConfig(args) => proxy_config::run(args),
        Command::Version(args) => version::run(args),
        Command::Dashboard(args) => dashboard::cluster_mode::run(args),
    }
}
