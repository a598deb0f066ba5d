//! `meshctl local`: runs Kubernetes YAML and mesh config on one Linux machine with
//! the real components — injector (library), CNI chain with `mesh-cni`, `mesh-agent`
//! in `files` mode, `mesh-proxy` sidecars — with app containers replaced by the echo
//! app. `up` creates a node and applies the files; `apply`/`delete` change things
//! live; `pods`, `exec`, `logs` inspect; `down` removes everything, also after a
//! crash, from the state kept in the run directory.

mod ca;
pub mod collector;
mod dashboard;
mod forward;
pub mod gateway;
mod manifest;
mod node;
mod pod;
mod proc;
mod publish;
mod secret;
mod smcp;
mod state;
mod status;
mod sysctl;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mesh_agent::objects::KubeObject;
use mesh_agent::validate::{has_errors, validate};
use mesh_webhook::config::parse_mesh_config;
use mesh_webhook::MeshConfig;
use serde_json::Value;

pub use manifest::Manifest;
use state::{write_file, Mode, RunDir, ServiceState, State};

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
pub struct FileArgs {
    /// Files or folders (read recursively) of YAML.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Namespace for documents that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// How redirect rules are written: by the chained CNI plugin, or by istio-init.
    #[arg(long, value_enum, default_value = "cni")]
    pub mode: Mode,
    /// Mesh config (the `mesh` key of Istio's ConfigMap); defaults apply without it.
    #[arg(long)]
    pub mesh_config: Option<PathBuf>,
    /// On failure, leave what was created for inspection (remove it with `down`).
    #[arg(long)]
    pub keep_on_error: bool,
    /// Gateways installed in istio-system, as Istio's demo profile does:
    /// `ingress,egress`, `ingress`, `egress` or `none`.
    #[arg(long, default_value = "ingress,egress")]
    pub gateways: String,
    /// Do not start the embedded trace collector. Without this flag, a Zipkin
    /// receiver on the pods' gateway address (port 9411) is the tracing backend
    /// whenever the mesh config names none (`meshctl local dashboard` shows its
    /// traces); sampling stays Istio's 1 % unless the mesh config sets
    /// `defaultConfig.tracing.sampling`.
    #[arg(long)]
    pub no_trace_collector: bool,
    /// What a sidecar without a Sidecar resource is given (mesh-agent
    /// `--visibility`): `on-demand` (its namespace's scope, plus each mesh
    /// service it calls, looked up on first use), `namespace` (only its
    /// namespace's scope) or `mesh` (every exported service up front, Istio's
    /// behaviour).
    #[arg(long, value_enum, default_value = "on-demand")]
    pub visibility: mesh_agent::compile::Visibility,
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
            up(&run, &args.name, &up_args)
        }
        Cmd::Apply(f) => {
            require_root()?;
            let mut st = run.load()?;
            agent_running(&run, &st)?;
            let m = manifest::read(&f.files, &f.namespace)?;
            apply(&run, &mut st, &m)
        }
        Cmd::Delete(f) => {
            require_root()?;
            let mut st = run.load()?;
            let m = manifest::read(&f.files, &f.namespace)?;
            delete(&run, &mut st, &m)
        }
        Cmd::Pods => pods(&run.load()?),
        Cmd::Exec(e) => {
            require_root()?;
            let st = run.load()?;
            let p = find_pod(&st, &e.pod, e.namespace.as_deref())?;
            let uid = e.uid.unwrap_or(p.app_uid);
            let status = proc::netns_command(&p.netns, uid, &e.command)
                .status()
                .with_context(|| format!("running {:?} in {}", e.command, p.name))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Logs(l) => {
            let st = run.load()?;
            let p = find_pod(&st, &l.pod, l.namespace.as_deref())?;
            let proc = match &l.container {
                Some(c) => p.procs.iter().find(|x| &x.container == c),
                None => p.procs.iter().find(|x| x.container != "istio-proxy"),
            };
            let Some(proc) = proc else {
                let have: Vec<&str> = p.procs.iter().map(|x| x.container.as_str()).collect();
                bail!(
                    "pod {}/{} has no container {:?} (it has {have:?})",
                    p.namespace,
                    p.name,
                    l.container.unwrap_or_default()
                );
            };
            let text = std::fs::read_to_string(&proc.log)
                .with_context(|| format!("reading {}", proc.log.display()))?;
            print!("{text}");
            Ok(())
        }
        Cmd::Down => {
            require_root()?;
            down(&run)
        }
        Cmd::ProxyConfig { kind, pod, args } => {
            require_root()?;
            let st = run.load()?;
            let p = find_pod(&st, &pod, None)?;
            if !p.sidecar {
                bail!("pod {}/{} has no sidecar", p.namespace, p.name);
            }
            // The admin port is loopback-only inside the pod.
            let mut argv = vec![
                st.bins["meshctl"].display().to_string(),
                "proxy-config".to_string(),
                kind,
                "127.0.0.1:15000".to_string(),
            ];
            argv.extend(args);
            let status = proc::netns_command(&p.netns, 0, &argv)
                .status()
                .context("running meshctl proxy-config in the pod")?;
            std::process::exit(status.code().unwrap_or(1));
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

/// A local mesh driven from code (the demo): the same steps as the subcommands.
pub struct Session {
    run: RunDir,
    name: String,
}

impl Session {
    pub fn new(root: &Path, name: &str) -> Session {
        Session {
            run: RunDir::new(root, name),
            name: name.to_string(),
        }
    }

    /// `up` in CNI mode with the given gateways (`--gateways`), replacing a
    /// leftover mesh of the same name.
    pub fn up(&self, files: &[PathBuf], gateways: &str) -> anyhow::Result<()> {
        require_root()?;
        if self.run.exists() {
            down(&self.run)?;
        }
        let args = UpArgs {
            files: FileArgs {
                files: files.to_vec(),
                namespace: "default".into(),
            },
            mode: Mode::Cni,
            mesh_config: None,
            keep_on_error: false,
            gateways: gateways.to_string(),
            no_trace_collector: false,
            visibility: mesh_agent::compile::Visibility::default(),
        };
        up(&self.run, &self.name, &args)
    }

    /// Applies a file and waits (bounded) until `pod`'s proxy runs the new config.
    pub fn apply_and_wait(&self, file: &Path, pod: &str) -> anyhow::Result<()> {
        let mut st = self.run.load()?;
        let p = find_pod(&st, pod, None)?.clone();
        let before = proxy_version(&p.netns);
        let m = manifest::read(&[file.to_path_buf()], "default")?;
        apply(&self.run, &mut st, &m)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while proxy_version(&p.netns) <= before {
            if std::time::Instant::now() > deadline {
                bail!(
                    "{pod}'s proxy did not receive {} within 15s",
                    file.display()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// Where a published Service port is reached from this host (`127.0.0.1:PORT`).
    pub fn service_url(&self, name: &str, namespace: &str, port: u16) -> anyhow::Result<String> {
        let st = self.run.load()?;
        let s = publish::service_url(&st.services, name, namespace, Some(port))?;
        Ok(s.trim().to_string())
    }

    /// `n` calls of `url` from this host (curl, one connection): how many each
    /// version answered, or the status when the answer is not the echo app's.
    pub fn host_versions(
        &self,
        url: &str,
        n: usize,
        extra: &[&str],
    ) -> anyhow::Result<Vec<(String, usize)>> {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "30"])
            .args(extra)
            .arg(format!("{url}?call=[1-{n}]"));
        let out = cmd.output().context("running curl")?;
        if !out.status.success() {
            bail!(
                "curl {url} from this host failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        count_versions(&String::from_utf8_lossy(&out.stdout))
    }

    /// One GET of `url` from this host: the status and the answering pod.
    pub fn host_get(&self, url: &str) -> anyhow::Result<(u16, Option<String>)> {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", url])
            .output()
            .context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        let pod = serde_json::from_str::<mesh_runtime::echo::EchoReply>(body)
            .ok()
            .map(|r| r.pod);
        Ok((code.trim().parse().unwrap_or(0), pod))
    }

    pub fn down(&self) -> anyhow::Result<()> {
        down(&self.run)
    }
}

/// Echo answers (concatenated JSON) counted by the answering pod's version.
fn count_versions(out: &str) -> anyhow::Result<Vec<(String, usize)>> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for reply in
        serde_json::Deserializer::from_str(out).into_iter::<mesh_runtime::echo::EchoReply>()
    {
        let r = reply.context("an answer was not the echo app's JSON")?;
        *counts
            .entry(r.version.unwrap_or_else(|| "-".into()))
            .or_default() += 1;
    }
    Ok(counts.into_iter().collect())
}

/// The config version a pod's proxy runs (0 when it cannot be read).
fn proxy_version(netns: &str) -> u64 {
    let argv: Vec<String> = [
        "curl",
        "-s",
        "--max-time",
        "2",
        "http://127.0.0.1:15000/config_dump",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    proc::run_in(netns, 0, &argv, "config_dump")
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_u64())
        .unwrap_or(0)
}

fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("meshctl local creates network namespaces and iptables rules: run it as root");
    }
    Ok(())
}

fn find_pod<'a>(
    st: &'a State,
    name: &str,
    ns: Option<&str>,
) -> anyhow::Result<&'a state::PodState> {
    let (ns, name) = match name.split_once('/') {
        Some((n, p)) => (Some(n), p),
        None => (ns, name),
    };
    let found: Vec<_> = st
        .pods
        .iter()
        .filter(|p| p.name == name && ns.is_none_or(|n| p.namespace == n))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "no pod {name:?}{} (see `meshctl local pods`)",
            ns.map(|n| format!(" in namespace {n}")).unwrap_or_default()
        ),
        _ => bail!("pod name {name:?} exists in several namespaces: give -n NAMESPACE"),
    }
}

/// Binaries next to this one, staged where any UID can execute them.
fn stage_bins(run: &RunDir) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let me = std::env::current_exe().context("locating meshctl")?;
    let dir = me.parent().context("meshctl has a folder")?;
    let mut bins = BTreeMap::new();
    for name in ["meshctl", "mesh-proxy", "mesh-agent", "mesh-cni"] {
        let src = dir.join(name);
        if !src.is_file() {
            bail!(
                "{} is missing: build the workspace binaries (`cargo build --workspace --bins`)",
                src.display()
            );
        }
        let path = if mesh_runtime::world_executable(&src) {
            src
        } else {
            let dst = run.0.join("bin").join(name);
            std::fs::create_dir_all(dst.parent().unwrap_or(Path::new("/")))?;
            proc::run(&["cp", &src.display().to_string(), &dst.display().to_string()])?;
            proc::run(&["chmod", "0755", &dst.display().to_string()])?;
            dst
        };
        bins.insert(name.to_string(), path);
    }
    Ok(bins)
}

fn mesh_from_text(text: &str) -> anyhow::Result<MeshConfig> {
    let mut mesh = if text.trim().is_empty() {
        MeshConfig::default()
    } else {
        parse_mesh_config(text).context("mesh config")?
    };
    mesh.agent_address = format!("{}:15012", node::GATEWAY);
    Ok(mesh)
}

fn mesh_path(run: &RunDir) -> PathBuf {
    run.0.join("mesh.yaml")
}

/// The mesh config without the ServiceMeshControlPlane, once one was applied.
fn mesh_base_path(run: &RunDir) -> PathBuf {
    run.0.join("mesh-base.yaml")
}

fn up(run: &RunDir, name: &str, args: &UpArgs) -> anyhow::Result<()> {
    if run.exists() {
        bail!(
            "a local mesh {name:?} already exists in {} (use `meshctl local apply`, or `meshctl local down` first)",
            run.0.display()
        );
    }
    // Read and check everything before creating anything. The gateways come
    // first, as Istio is installed before the applications.
    let mut kinds =
        gateway::parse(&args.gateways).map_err(|e| anyhow::anyhow!("--gateways: {e}"))?;
    let files = manifest::objects(&args.files.files)?;
    let text = match &args.mesh_config {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading mesh config {}", p.display()))?,
        None => String::new(),
    };
    // The embedded collector is the backend only when the config names none.
    let collector_addr = format!("{}:{}", node::GATEWAY, collector::PORT);
    let (base_text, use_collector) = if args.no_trace_collector {
        (text, false)
    } else {
        collector::with_default_backend(&text, &collector_addr)?
    };
    // A ServiceMeshControlPlane: its mesh config over the user's, its gateways
    // added to --gateways, its PeerAuthentication with the other resources.
    let smcp = smcp::from_objects(&files, &base_text)?;
    let mut objs: Vec<(String, Value)> = Vec::new();
    if let Some(s) = &smcp {
        for k in &s.gateways {
            if !kinds.contains(k) {
                kinds.push(*k);
            }
        }
        if let Some(pa) = &s.peer_authentication {
            objs.push(("ServiceMeshControlPlane".to_string(), pa.clone()));
        }
    }
    let mut objs: Vec<(String, Value)> = gateway::install(&kinds)
        .into_iter()
        .map(|v| ("meshctl local gateways".to_string(), v))
        .chain(objs)
        .collect();
    objs.extend(files);
    let m = manifest::from_objects(objs, &args.files.namespace)?;
    check_mesh_resources(&m)?;
    let text = match &smcp {
        Some(s) => s.mesh_text.clone(),
        None => base_text.clone(),
    };
    let mut mesh = mesh_from_text(&text)?;
    mesh.cni.enabled = args.mode == Mode::Cni;
    std::fs::create_dir_all(run.pods_dir())
        .with_context(|| format!("creating {}", run.0.display()))?;
    for d in [&run.0, &run.config(), &run.pods_dir()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    write_file(&mesh_path(run), &text)?;
    if let Some(s) = &smcp {
        // The user's config, for a later SMCP edit to apply over.
        write_file(&mesh_base_path(run), &base_text)?;
        for n in &s.notes {
            println!("{n}");
        }
    }
    let bins = stage_bins(run)?;
    let cni_dir = bins["mesh-cni"]
        .parent()
        .context("mesh-cni folder")?
        .to_path_buf();
    let mesh_cni = (args.mode == Mode::Cni).then(|| {
        serde_json::json!({
            "type": "mesh-cni",
            "podDir": run.pods_dir(),
            "stateDir": run.0.join("cni-state"),
            "logFile": run.logs().join("mesh-cni.log"),
        })
    });
    let mut st = State {
        name: name.to_string(),
        mode: args.mode,
        node_netns: format!("ml-{name}-node"),
        chain: node::chain(&run.0, mesh_cni),
        cni_path: vec![
            cni_dir,
            mesh_runtime::cni::system_plugin_dir().to_path_buf(),
        ],
        agent: None,
        forwarder: None,
        forwarded_ports: Vec::new(),
        collector: None,
        trust_domain: mesh.trust_domain.clone(),
        namespaces: BTreeMap::new(),
        members: None,
        services: Vec::new(),
        pods: Vec::new(),
        bins,
    };
    run.save(&st)?;
    let result = (|| {
        println!(
            "creating node {} (bridge cni0 {}, gateway {})",
            st.node_netns,
            node::POD_SUBNET,
            node::GATEWAY
        );
        node::create(&st)?;
        if use_collector {
            start_collector(run, &mut st, &collector_addr)?;
        }
        start_agent(run, &mut st, &mesh, args.visibility)?;
        apply_with(run, &mut st, &m, &mesh)
    })();
    if let Err(e) = result {
        if args.keep_on_error {
            eprintln!("meshctl local up failed: {e:#}\nleft in place for inspection (`meshctl local down` removes it)");
        } else {
            eprintln!("meshctl local up failed: {e:#}\nremoving what was created");
            let _ = down(run);
        }
        return Err(e);
    }
    for line in publish::addresses(&st) {
        println!("{line}");
    }
    println!("local mesh {name:?} is up: `meshctl local pods`, `meshctl local exec POD -- curl ...`, `meshctl local down`");
    Ok(())
}

/// Applying to a mesh whose agent died would push nothing to any sidecar:
/// say so instead of reporting resources as configured.
fn agent_running(run: &RunDir, st: &State) -> anyhow::Result<()> {
    match &st.agent {
        Some(a) if proc::alive(a) => Ok(()),
        a => bail!(
            "the mesh-agent of local mesh {:?} is not running ({}; log {}): nothing \
             would be pushed to the sidecars, so nothing was applied. \
             `meshctl local down` and `up` start the mesh again",
            st.name,
            a.as_ref().map_or("never started".to_string(), |a| format!(
                "pid {} exited",
                a.pid
            )),
            run.logs().join("mesh-agent.log").display()
        ),
    }
}

fn start_agent(
    run: &RunDir,
    st: &mut State,
    mesh: &MeshConfig,
    visibility: mesh_agent::compile::Visibility,
) -> anyhow::Result<()> {
    let policy = match mesh.outbound_traffic_policy.mode {
        mesh_api::meshconfig::OutboundMode::AllowAny => "ALLOW_ANY",
        mesh_api::meshconfig::OutboundMode::RegistryOnly => "REGISTRY_ONLY",
    };
    let argv: Vec<String> = [
        st.bins["mesh-agent"].display().to_string(),
        "--config-dir".into(),
        run.config().display().to_string(),
        "--listen".into(),
        format!("{}:15012", node::GATEWAY),
        "--debug-listen".into(),
        "127.0.0.1:15014".into(),
        "--debounce-ms".into(),
        "20".into(),
        "--outbound-policy".into(),
        policy.into(),
        "--trust-domain".into(),
        mesh.trust_domain.clone(),
        "--root-namespace".into(),
        mesh.root_namespace.clone(),
        "--visibility".into(),
        clap::ValueEnum::to_possible_value(&visibility)
            .expect("every visibility has a flag value")
            .get_name()
            .to_string(),
        "--agent-name".into(),
        format!("mesh-agent-{}", st.name),
        // The mesh config file itself, for what the flags do not carry
        // (access log, tracing), re-read when it changes.
        "--mesh-config".into(),
        mesh_path(run).display().to_string(),
        "--mesh-reload-ms".into(),
        "100".into(),
    ]
    .into();
    ca::init(run)?;
    let mut argv = argv;
    argv.extend([
        "--ca-tokens".to_string(),
        ca::tokens_file(run).display().to_string(),
        "--ca-root-out".to_string(),
        ca::root_file(run).display().to_string(),
    ]);
    start_in_node(
        run,
        st,
        "mesh-agent",
        &argv,
        |s| &mut s.agent,
        "mesh-agent listening",
    )?;
    println!(
        "mesh-agent listening on {}:15012 (files source {})",
        node::GATEWAY,
        run.config().display()
    );
    Ok(())
}

/// Starts a node process (log `logs/NAME.log`), records it in `slot` of the
/// state before waiting (so `down` stops it even if it never gets ready), and
/// waits for its `ready` line.
fn start_in_node(
    run: &RunDir,
    st: &mut State,
    name: &str,
    argv: &[String],
    slot: fn(&mut State) -> &mut Option<state::Proc>,
    ready: &str,
) -> anyhow::Result<()> {
    let log = run.logs().join(format!("{name}.log"));
    let p = proc::spawn(name, &st.node_netns, 0, argv, &[], &log)?;
    *slot(st) = Some(p.clone());
    run.save(st)?;
    proc::wait_for_log(&p, ready, Duration::from_secs(20))
}

fn start_collector(run: &RunDir, st: &mut State, addr: &str) -> anyhow::Result<()> {
    let argv: Vec<String> = [
        st.bins["meshctl"].display().to_string(),
        "local".into(),
        "collector".into(),
        "--listen".into(),
        addr.into(),
    ]
    .into();
    start_in_node(
        run,
        st,
        "trace-collector",
        &argv,
        |s| &mut s.collector,
        collector::READY,
    )?;
    println!("trace collector (Zipkin) listening on {addr}: the mesh's tracing backend");
    Ok(())
}

/// Refuses mesh resources the agent would reject, with its precise messages.
fn check_mesh_resources(m: &Manifest) -> anyhow::Result<()> {
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

fn mesh_file(run: &RunDir, v: &Value) -> PathBuf {
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

fn secret_file(run: &RunDir, ns: &str, name: &str) -> PathBuf {
    run.secrets_dir().join(format!("{ns}_{name}.yaml"))
}

fn service_file(run: &RunDir, ns: &str, name: &str) -> PathBuf {
    run.config()
        .join("services")
        .join(format!("{ns}_{name}.yaml"))
}

fn apply(run: &RunDir, st: &mut State, m: &Manifest) -> anyhow::Result<()> {
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

fn apply_with(run: &RunDir, st: &mut State, m: &Manifest, mesh: &MeshConfig) -> anyhow::Result<()> {
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
fn refresh(run: &RunDir, st: &mut State) -> anyhow::Result<()> {
    let entries = if run.applied_dir().exists() {
        service_entry_hosts(run)
    } else {
        Vec::new()
    };
    node::write_resolution(st, &entries)?;
    node::write_service_rules(st)?;
    publish::sync(run, st)
}

fn delete(run: &RunDir, st: &mut State, m: &Manifest) -> anyhow::Result<()> {
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

fn pods(st: &State) -> anyhow::Result<()> {
    println!(
        "{:<12} {:<24} {:<6} {:<10} {:<15} SIDECAR",
        "NAMESPACE", "NAME", "READY", "STATUS", "IP"
    );
    for p in &st.pods {
        let alive = p.procs.iter().filter(|x| proc::alive(x)).count();
        let status = if !p.ready {
            "Pending"
        } else if alive == p.procs.len() {
            "Running"
        } else {
            "Error"
        };
        println!(
            "{:<12} {:<24} {:<6} {:<10} {:<15} {}",
            p.namespace,
            p.name,
            format!("{alive}/{}", p.procs.len()),
            status,
            p.ip.as_deref().unwrap_or("-"),
            if p.sidecar { "istio-proxy" } else { "-" }
        );
    }
    Ok(())
}

/// Removes everything recorded in the state: processes, pods (CNI DEL), agent,
/// node, files. Goes on past errors and reports them at the end.
pub fn down(run: &RunDir) -> anyhow::Result<()> {
    if !run.exists() {
        if run.0.exists() {
            let _ = std::fs::remove_dir_all(&run.0);
        }
        println!("no local mesh at {}: nothing to remove", run.0.display());
        return Ok(());
    }
    let st = run.load()?;
    let mut errors = Vec::new();
    if let Some(f) = &st.forwarder {
        proc::stop(f, Duration::from_secs(3));
    }
    for p in st.pods.iter().rev() {
        errors.extend(pod::remove(&st, run, p));
    }
    if let Some(a) = &st.agent {
        proc::stop(a, Duration::from_secs(3));
    }
    if let Some(c) = &st.collector {
        proc::stop(c, Duration::from_secs(3));
    }
    errors.extend(node::del_node(&st));
    if let Err(e) = std::fs::remove_dir_all(&run.0) {
        errors.push(format!("removing {}: {e}", run.0.display()));
    }
    println!(
        "removed {} pods, the agent and node {}",
        st.pods.len(),
        st.node_netns
    );
    if !errors.is_empty() {
        bail!(
            "some things could not be removed:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(())
}
