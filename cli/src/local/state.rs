//! What `meshctl local` created, kept on disk under the run directory so that
//! every later command (`apply`, `pods`, `exec`, `logs`, `down`) — and `down`
//! after a crash — knows exactly what exists. The file is rewritten atomically
//! after every step that creates something.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How redirect rules get into a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `mesh-cni` chained after bridge writes them (the `istio-validation` container checks).
    Cni,
    /// The injected `istio-init` container runs `mesh-cni redirect`.
    Init,
}

/// One process started for a pod (or the node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proc {
    /// Container name (`istio-proxy`, the app container's name, `agent`).
    pub container: String,
    pub pid: u32,
    /// Process start time (field 22 of /proc/PID/stat), so a recycled PID is never killed.
    pub start_time: u64,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    pub name: String,
    pub namespace: String,
    pub netns: String,
    pub container_id: String,
    pub ip: Option<String>,
    /// Final CNI result (DEL gets it as prevResult).
    pub cni_result: Option<Value>,
    /// Chain plugins whose ADD completed (DEL runs over exactly those).
    pub cni_added: usize,
    pub loopback_added: bool,
    pub sidecar: bool,
    pub ready: bool,
    pub app_uid: u32,
    pub labels: BTreeMap<String, String>,
    /// Named container ports (for Services whose targetPort is a name).
    pub ports: BTreeMap<String, u16>,
    pub procs: Vec<Proc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceState {
    pub name: String,
    pub namespace: String,
    /// `None` for headless services.
    pub vip: Option<String>,
    pub selector: BTreeMap<String, String>,
    /// (port, targetPort as written: a number or a container port name).
    pub ports: Vec<(u16, String)>,
    /// LoadBalancer and NodePort Services: (port, host port on 127.0.0.1),
    /// chosen once and kept for the life of the mesh.
    #[serde(default)]
    pub published: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub mode: Mode,
    pub node_netns: String,
    /// Plugins of the conflist after loopback (bridge, then mesh-cni in CNI mode).
    pub chain: Vec<Value>,
    pub cni_path: Vec<PathBuf>,
    pub agent: Option<Proc>,
    /// The host-port forwarder and the host ports it was started with.
    #[serde(default)]
    pub forwarder: Option<Proc>,
    #[serde(default)]
    pub forwarded_ports: Vec<u16>,
    /// The embedded trace collector (`None` when `up --no-trace-collector`).
    #[serde(default)]
    pub collector: Option<Proc>,
    pub trust_domain: String,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// OpenShift Service Mesh membership in force (a ServiceMeshMemberRoll or
    /// ServiceMeshMember was applied): injection follows OSSM's rule.
    #[serde(default)]
    pub members: Option<std::collections::BTreeSet<String>>,
    pub services: Vec<ServiceState>,
    pub pods: Vec<PodState>,
    /// Binaries as the pods' users can execute them.
    pub bins: BTreeMap<String, PathBuf>,
}

/// The run directory of one local mesh.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(root: &Path, name: &str) -> RunDir {
        RunDir(root.join(name))
    }
    pub fn state_file(&self) -> PathBuf {
        self.0.join("state.json")
    }
    /// The agent's `files` folder (Services, Pods with IPs, mesh resources).
    pub fn config(&self) -> PathBuf {
        self.0.join("config")
    }
    pub fn pods_dir(&self) -> PathBuf {
        self.config().join("pods")
    }
    pub fn applied_dir(&self) -> PathBuf {
        self.config().join("applied")
    }
    /// The forwarder's table (host port → Service endpoints).
    pub fn forward_table(&self) -> PathBuf {
        self.0.join("forward.json")
    }
    /// Secrets for the agent (mode 0600 files).
    pub fn secrets_dir(&self) -> PathBuf {
        self.config().join("secrets")
    }
    pub fn logs(&self) -> PathBuf {
        self.0.join("logs")
    }
    pub fn exists(&self) -> bool {
        self.state_file().exists()
    }

    pub fn load(&self) -> anyhow::Result<State> {
        let path = self.state_file();
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "no local mesh at {} (run `meshctl local up -f ...` first)",
                self.0.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("corrupt state {}", path.display()))
    }

    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let path = self.state_file();
        let tmp = self.0.join(".state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

/// Writes `text` to `path` atomically and world-readable (the agent and CNI
/// plugin read these while they change).
pub fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("file has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
