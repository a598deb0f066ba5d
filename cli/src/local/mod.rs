//! `meshctl local`: runs Kubernetes YAML and mesh config on one Linux machine with
//! the real components — injector (library), CNI chain with `mesh-cni`, `mesh-agent`
//! in `files` mode, `mesh-proxy` sidecars — with app containers replaced by the echo
//! app. `up` creates a node and applies the files; `apply`/`delete` change things
//! live; `pods`, `exec`, `logs` inspect; `down` removes everything, also after a
//! crash, from the state kept in the run directory.
//!
//! This file holds the command line and its dispatch; each subcommand's work
//! is in its own module (`up`, `apply`, `delete`, `pods`, `down`), and
//! `session` runs the same steps from code for the demo.

mod apply;
mod ca;
pub mod collector;
mod dashboard;
mod delete;
mod down;
mod forward;
pub mod gateway;
mod manifest;
mod mesh_config;
mod node;
mod pod;
mod pods;
mod proc;
mod publish;
mod secret;
mod session;
mod smcp;
mod state;
mod status;
mod sysctl;
mod up;

use std::path::PathBuf;

use anyhow::Context;

pub use down::down;
use node::require_root;
pub use session::Session;
use state::RunDir;
pub use up::{FileArgs, UpArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of this local mesh (several can run side by side).
    #[arg(
        long,
        global = true,
        env = "MESHCTL_LOCAL_NAME",
        default_value = "default"
    )]
    name: String,
    /// Where run directories (state, agent config, logs) are kept.
    #[arg(
        long,
        global = true,
        env = "MESHCTL_LOCAL_ROOT",
        default_value = "/run/meshctl-local"
    )]
    root: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Create the node and agent, then apply the files (Kubernetes YAML + mesh resources).
    Up(UpArgs),
    /// Create or change resources live (mesh resources, Services, workloads).
    /// Refused (exit 1, nothing changed) when the mesh's agent is not running:
    /// nothing would reach the sidecars, and only `down` + `up` start a new one.
    Apply(FileArgs),
    /// Remove the resources named in the files.
    Delete(FileArgs),
    /// List pods with IP, readiness and sidecar.
    Pods,
    /// Run a command in a pod's network namespace as its app's UID (traffic is captured).
    Exec(ExecArgs),
    /// Print a container's log (`-c istio-proxy` for the sidecar).
    Logs(LogsArgs),
    /// Remove everything this local mesh created.
    Down,
    /// `meshctl proxy-config KIND` of a pod's sidecar (clusters, listeners, routes, endpoints, all).
    ProxyConfig {
        /// cluster | listener | route | endpoint | all
        kind: String,
        /// Pod name (`name` or `namespace/name`).
        pod: String,
        /// Arguments passed on (`-o json`, `--fqdn`, `--port`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Where a published Service port (the ingress gateway's) is reached from
    /// this host: `127.0.0.1:HOSTPORT`, or `PORT HOSTPORT` lines without `--port`.
    ServiceUrl {
        /// Service name.
        #[arg(value_name = "NAME")]
        service: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The Service port (80 for the ingress gateway's http2).
        #[arg(long)]
        port: Option<u16>,
    },
    /// The host-port forwarder process (started by `up`/`apply`).
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        table: PathBuf,
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
    },
    /// Serve the mesh's dashboard (service graph, workloads, traces) on loopback.
    Dashboard(crate::dashboard::Args),
    /// The embedded Zipkin trace collector (started by `up`).
    #[command(hide = true)]
    Collector {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Spans kept in memory (the oldest go first).
        #[arg(long, default_value_t = collector::DEFAULT_SPANS)]
        spans: usize,
    },
    /// `meshctl proxy-status` against this mesh's agent.
    ProxyStatus {
        /// Arguments passed on (`-n NAMESPACE`, `--json`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The `status` of Gateway API objects as the agent computed it (what it
    /// writes back in a cluster): every object's conditions, or one object's
    /// whole status as YAML (`gateway/NS/NAME`, `httproute/NS/NAME`, ...).
    Status {
        /// `KIND/NAMESPACE/NAME` (kind case-insensitive).
        object: Option<String>,
        /// The agent's debug address (set when re-run inside the node).
        #[arg(long, hide = true)]
        agent: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// Pod name (`name` or `namespace/name`).
    pod: String,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Run as this UID instead of the app's (1337 bypasses the capture, as in a pod).
    #[arg(long)]
    uid: Option<u32>,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct LogsArgs {
    pod: String,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Container (default: the first app container).
    #[arg(short = 'c', long)]
    container: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let run = RunDir::new(&args.root, &args.name);
    match args.command {
        Cmd::Up(up_args) => {
            require_root()?;
            up::up(&run, &args.name, &up_args)
        }
        Cmd::Apply(f) => {
            require_root()?;
            let mut st = run.load()?;
            up::agent_running(&run, &st)?;
            let m = manifest::read(&f.files, &f.namespace)?;
            apply::apply(&run, &mut st, &m)
        }
        Cmd::Delete(f) => {
            require_root()?;
            let mut st = run.load()?;
            let m = manifest::read(&f.files, &f.namespace)?;
            delete::delete(&run, &mut st, &m)
        }
        Cmd::Pods => pods::pods(&run.load()?),
        Cmd::Exec(e) => {
            require_root()?;
            let st = run.load()?;
            pods::exec(&st, &e.pod, e.namespace.as_deref(), e.uid, &e.command)
        }
        Cmd::Logs(l) => {
            let st = run.load()?;
            pods::logs(&st, &l.pod, l.namespace.as_deref(), l.container.as_deref())
        }
        Cmd::Down => {
            require_root()?;
            down(&run)
        }
        Cmd::ProxyConfig { kind, pod, args } => {
            require_root()?;
            let st = run.load()?;
            pods::proxy_config(&st, &pod, kind, args)
        }
        Cmd::ServiceUrl {
            service,
            namespace,
            port,
        } => {
            let st = run.load()?;
            print!(
                "{}",
                publish::service_url(&st.services, &service, &namespace, port)?
            );
            Ok(())
        }
        Cmd::Forward {
            netns,
            table,
            ports,
        } => Ok(forward::serve(&netns, table, &ports)?),
        Cmd::Collector { listen, spans } => Ok(collector::serve(listen, spans)?),
        Cmd::Dashboard(d) => {
            require_root()?;
            dashboard::run(&run, &args.name, &d)
        }
        Cmd::Status { object, agent } => match agent {
            Some(addr) => status::print(&addr, object.as_deref()),
            None => {
                require_root()?;
                let st = run.load()?;
                // The agent's debug port is loopback-only inside the node namespace.
                let mut argv = vec![
                    st.bins["meshctl"].display().to_string(),
                    "local".to_string(),
                    "status".to_string(),
                    "--agent".to_string(),
                    "127.0.0.1:15014".to_string(),
                ];
                argv.extend(object);
                let status = proc::netns_command(&st.node_netns, 0, &argv)
                    .status()
                    .context("running meshctl local status in the node")?;
                std::process::exit(status.code().unwrap_or(1));
            }
        },
        Cmd::ProxyStatus { args } => {
            require_root()?;
            let st = run.load()?;
            // The agent's debug port is loopback-only inside the node namespace.
            let mut argv = vec![
                st.bins["meshctl"].display().to_string(),
                "proxy-status".to_string(),
                "--agent".to_string(),
                "127.0.0.1:15014".to_string(),
            ];
            argv.extend(args);
            let status = proc::netns_command(&st.node_netns, 0, &argv)
                .status()
                .context("running meshctl proxy-status in the node")?;
            std::process::exit(status.code().unwrap_or(1));
        }
    }
}
