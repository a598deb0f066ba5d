//! Where the agent reads the mesh from (`--source`): a directory of YAML, one
//! file per service (`files`: the agent's `--config-dir`, as local mode runs
//! it), or the in-process fake Kubernetes API server (`kubernetes`: the
//! default install's path, kube-rs lists and watches). The fake serves on a
//! thread of its own in this process, so what it spends is not counted as
//! the agent's CPU, as a real API server's would not be; it bookmarks open
//! watches once a minute, as the real one does.
//!
//! One change of the series replaces one EndpointSlice in one step: the
//! service's file renamed over (the agent reads the whole file again), or the
//! EndpointSlice object updated (one MODIFIED watch event). Imports only
//! `mesh` and `procs`.

use crate::mesh::{service_yaml, service_yaml_with, write_mesh};
use crate::procs::{start_agent, Agent, AgentCmd};
use mesh_e2e::fake_api::{docs, Fake, Threaded};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `--source` of the benchmark.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceArg {
    Files,
    Kubernetes,
}

/// The mesh, written where the agent reads it.
pub enum Feed {
    Files { dir: PathBuf },
    Kubernetes { api: Threaded },
}

/// The mesh's sizes.
#[derive(Clone, Copy)]
pub struct Shape {
    pub services: usize,
    pub namespaces: usize,
    pub vs: usize,
}

impl Feed {
    /// Writes the mesh for `source` (into `dir` for files).
    pub fn new(source: SourceArg, dir: &Path, shape: Shape) -> Feed {
        match source {
            SourceArg::Files => {
                write_mesh(dir, shape.services, shape.namespaces, shape.vs);
                Feed::Files { dir: dir.into() }
            }
            SourceArg::Kubernetes => {
                let fake = Fake::with_bookmarks(Duration::from_secs(60));
                for n in 0..shape.namespaces {
                    fake.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": format!("ns-{n}")}}));
                }
                for i in 0..shape.services {
                    let text = service_yaml(i, shape.namespaces, i < shape.vs, None);
                    for d in docs(&text) {
                        fake.apply(d);
                    }
                }
                Feed::Kubernetes { api: fake.spawn() }
            }
        }
    }

    /// What the report calls this source.
    pub fn label(&self) -> &'static str {
        match self {
            Feed::Files { .. } => "files (--config-dir, one YAML file per service)",
            Feed::Kubernetes { .. } => {
                "kubernetes (kube-rs watches of the in-process fake API server)"
            }
        }
    }

    /// How the agent is started on this mesh. With the Kubernetes source the
    /// agent runs its CA, so its sync port speaks TLS and wants pod tokens:
    /// the in-process proxies use the plaintext config-only port (Istio's
    /// 15010), which serves the same views.
    pub fn agent_cmd(&self) -> AgentCmd {
        match self {
            Feed::Files { dir } => AgentCmd {
                source: vec!["--config-dir".into(), dir.display().to_string()],
                env: vec![],
                plaintext: false,
            },
            Feed::Kubernetes { api } => AgentCmd {
                source: vec!["--source".into(), "kubernetes".into()],
                env: vec![("KUBECONFIG".into(), api.kubeconfig().display().to_string())],
                plaintext: true,
            },
        }
    }

    /// Starts the agent on this mesh, proxies' port on `listen`.
    pub fn start_agent(&self, listen: &str, log: &Path) -> Agent {
        start_agent(&self.agent_cmd(), listen, log)
    }

    /// Replaces service `i`'s EndpointSlice with `marker` as its first
    /// endpoint's address, in one step.
    pub fn change(&self, i: usize, shape: Shape, marker: &str) {
        self.write(
            i,
            service_yaml(i, shape.namespaces, i < shape.vs, Some(marker)),
        );
    }

    /// Replaces service `i`'s EndpointSlice with one endpoint per address of
    /// `addrs`, in one step.
    pub fn set_endpoints(&self, i: usize, shape: Shape, addrs: &[String]) {
        self.write(
            i,
            service_yaml_with(i, shape.namespaces, i < shape.vs, addrs),
        );
    }

    /// Writes service `i` as `text` says: its file renamed over, or its
    /// EndpointSlice object updated.
    fn write(&self, i: usize, text: String) {
        match self {
            Feed::Files { dir } => {
                let name = format!("svc-{i}.yaml");
                let tmp = dir.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, text).unwrap();
                std::fs::rename(&tmp, dir.join(name)).unwrap();
            }
            Feed::Kubernetes { api } => {
                let slice = docs(&text)
                    .into_iter()
                    .find(|d| d["kind"] == "EndpointSlice")
                    .unwrap();
                api.apply(slice);
            }
        }
    }
}
