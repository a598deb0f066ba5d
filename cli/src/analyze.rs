//! `meshctl analyze -f FILE_OR_DIR...`: offline checks over Kubernetes and Istio YAML,
//! like `istioctl analyze --use-kube=false`. The files go through mesh-agent's own
//! reader, store, per-resource validation and snapshot compiler (so analyze and the
//! agent agree on what is valid); [`checks`] adds the cross-resource findings, each
//! with Istio's code where one exists. Exit code 79 (istioctl's) when a finding is
//! at or above `--failure-threshold`. OpenShift Service Mesh control planes are
//! checked too ([`maistra`]).

mod checks;
mod gateways;
mod maistra;
mod workloads;

pub use checks::{Level, Message};

use anyhow::{bail, Context};
use mesh_agent::compile::{compile, Settings};
use mesh_agent::source::files;
use mesh_agent::store::{SourceEvent, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// istioctl analyze's exit code when issues at or above the threshold were found.
pub const ISSUES_FOUND: i32 = 79;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders (read recursively) of Kubernetes/Istio YAML.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Lowest level that makes the exit code non-zero.
    #[arg(long, value_enum, default_value = "error")]
    failure_threshold: Level,
    /// Lowest level printed.
    #[arg(long, value_enum, default_value = "info")]
    output_threshold: Level,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Format,
    /// Namespace holding mesh-wide resources (mesh-wide PeerAuthentication).
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
    /// Gateways of the install assumed to run in the root namespace besides
    /// the input's workloads (what Gateway selectors may match): `ingress`
    /// (the default install's istio-ingressgateway), `ingress,egress`, `none`.
    #[arg(long, default_value = "ingress")]
    installed_gateways: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Reads every input into the agent's store and runs all checks.
pub fn analyze_paths(
    paths: &[PathBuf],
    root_namespace: &str,
    installed_gateways: &str,
) -> anyhow::Result<Vec<Message>> {
    let installed = crate::local::gateway::parse(installed_gateways)
        .map_err(|e| anyhow::anyhow!("--installed-gateways: {e}"))?;
    let mut inputs = Vec::new();
    for p in paths {
        if p.is_dir() {
            let found =
                files::scan(p).with_context(|| format!("reading folder {}", p.display()))?;
            if found.is_empty() {
                bail!("folder {} holds no .yaml/.yml/.json files", p.display());
            }
            inputs.extend(found);
        } else if p.is_file() {
            inputs.push(p.clone());
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    let mut store = Store::default();
    let mut workloads = Vec::new();
    // Which files define each object: the store keeps the last one silently.
    let mut defined_in: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut smcp_msgs = Vec::new();
    for f in &inputs {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let ev = files::read_file(f);
        if let SourceEvent::Replace {
            origin, objects, ..
        } = &ev
        {
            // Workloads (Deployments, ...) are not the agent's business; read their pod templates here.
            workloads.extend(workloads::parse(&text));
            smcp_msgs.extend(maistra::check(&text));
            for o in objects {
                let k = o.key();
                defined_in
                    .entry(if k.namespace.is_empty() {
                        format!("{} {}", k.kind, k.name)
                    } else {
                        format!("{} {}/{}", k.kind, k.namespace, k.name)
                    })
                    .or_default()
                    .push(origin.clone());
            }
        }
        store.apply(ev);
    }
    let settings = Arc::new(Settings {
        root_namespace: root_namespace.to_string(),
        ..Settings::default()
    });
    let snap = compile(&store, &settings, 1);
    let mut msgs = checks::run(&store, &snap, &workloads);
    // The install's gateway pods, in the root namespace, unless the input has them.
    let mut pods = workloads.clone();
    for kind in installed {
        let known = pods
            .iter()
            .any(|w| w.namespace == root_namespace && w.name == kind.name());
        if !known {
            pods.extend(kind.objects().iter().filter_map(|o| {
                let mut o = o.clone();
                o["metadata"]["namespace"] = serde_json::json!(root_namespace);
                workloads::from_value(&o)
            }));
        }
    }
    gateways::run(&store, &snap, &pods, &mut msgs);
    msgs.extend(smcp_msgs);
    msgs.sort();
    msgs.dedup();
    for (resource, origins) in defined_in.into_iter().filter(|(_, o)| o.len() > 1) {
        msgs.push(Message {
            level: Level::Warning,
            code: "MESH0002",
            name: "DuplicateResource",
            text: format!("defined in several inputs ({}); only the last one is analyzed", origins.join(", ")),
            hint: "keep one definition (alternative sample files are meant to be applied one at a time)".into(),
            resource,
        });
    }
    msgs.sort();
    Ok(msgs)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut msgs = analyze_paths(&args.files, &args.root_namespace, &args.installed_gateways)?;
    msgs.retain(|m| m.level <= args.output_threshold);
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&msgs)?),
        Format::Text if msgs.is_empty() => {
            println!("No validation issues found when analyzing the given files.")
        }
        Format::Text => print!("{}", render(&msgs)),
    }
    if msgs.iter().any(|m| m.level <= args.failure_threshold) {
        use std::io::Write;
        std::io::stdout().flush()?;
        std::process::exit(ISSUES_FOUND);
    }
    Ok(())
}

/// istioctl's layout: `Error [IST0101] (VirtualService default/reviews) text`, then the fix.
pub fn render(msgs: &[Message]) -> String {
    let mut out = String::new();
    for m in msgs {
        out.push_str(&format!(
            "{} [{}] ({}) {}\n",
            m.level.label(),
            m.code,
            m.resource,
            m.text
        ));
        out.push_str(&format!("    fix: {}\n", m.hint));
    }
    out
}
