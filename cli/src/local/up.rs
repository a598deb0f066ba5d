//! `meshctl local up`: reading and checking everything first, then creating the
//! run directory, the node, the node's own processes (trace collector,
//! `mesh-agent`) and applying the files; on failure, removing what was created
//! unless `--keep-on-error`. The options of `up` (and the file arguments that
//! `apply`/`delete` share) live here, next to the code that reads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mesh_webhook::MeshConfig;
use serde_json::Value;

use super::apply::{apply_with, check_mesh_resources};
use super::down::down;
use super::mesh_config::{mesh_base_path, mesh_from_text, mesh_path};
use super::state::{self, write_file, Mode, RunDir, State};
use super::{ca, collector, gateway, manifest, node, proc, publish, smcp};

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

/// Creates the local mesh `name` in `run` from `args`.
pub(super) fn up(run: &RunDir, name: &str, args: &UpArgs) -> anyhow::Result<()> {
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
pub(super) fn agent_running(run: &RunDir, st: &State) -> anyhow::Result<()> {
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
