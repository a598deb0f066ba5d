//! `mesh-runtime`: the node and pod runtime that `meshctl local` runs a mesh on,
//! and that the end-to-end tests and `mesh-bench` build their pods with.
//!
//! A [`Node`] is a network namespace holding a Linux bridge; a [`Pod`] is a network
//! namespace attached to it by running the real CNI plugins (Debian's `loopback`,
//! `bridge` and `host-local`, plus any chained plugin such as `mesh-cni`) through
//! the CNI protocol, exactly as a container runtime would. Processes run inside a
//! pod's namespace as a chosen UID ([`process`]). Everything is removed on drop,
//! also when a test panics, and names are unique per process and node so tests run
//! in parallel. Because every node lives in its own namespace, nodes share one
//! subnet and never touch the host's interfaces or routes. [`echo`] is the
//! application local mode deploys for Deployments without a command of their own
//! (`meshctl echo`).
//!
//! It lives under `cli/` because it is part of the product (local mode); the tests
//! reach it as `mesh_e2e::harness`.

// Errors carry the whole context of a failed command (plugin, netns, stderr) on
// purpose; they are the cold path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod cni;
pub mod echo;
mod error;
pub mod process;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

pub use error::{HarnessError, Result};
pub use process::PodProcess;

/// Subnet every node hands out pod addresses from.
pub const POD_SUBNET: &str = "10.88.0.0/16";
/// The bridge's address, which is every pod's default gateway.
pub const GATEWAY: &str = "10.88.0.1";
/// Prefix of every namespace the harness creates (for leak checks).
pub const NETNS_PREFIX: &str = "mesh-";
const CNI_VERSION: &str = "1.0.0";

/// The node's first CNI plugin: Debian's `bridge` on `cni0` (the node is the
/// gateway) with `host-local` addresses from [`POD_SUBNET`], its state kept in
/// `state_dir`; ours is chained after it, as on a real node.
pub fn bridge_plugin(state_dir: &std::path::Path) -> serde_json::Value {
    json!({
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": state_dir.join("ipam"),
        }
    })
}

static NEXT_NODE: AtomicU32 = AtomicU32::new(0);

/// Configures a [`Node`]: extra plugin directories and plugins chained after the
/// bridge.
#[derive(Default)]
pub struct NodeBuilder {
    plugin_dirs: Vec<PathBuf>,
    chain: Vec<Value>,
}

impl NodeBuilder {
    /// A directory searched for plugins before `/usr/lib/cni`.
    pub fn plugin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_dirs.push(dir.into());
        self
    }

    /// A plugin appended to the conflist after `bridge` (its `type` names the binary).
    pub fn chain_plugin(mut self, conf: Value) -> Self {
        self.chain.push(conf);
        self
    }

    pub fn build(self) -> Result<Node> {
        let id = format!(
            "{}{}-{}",
            NETNS_PREFIX,
            std::process::id(),
            NEXT_NODE.fetch_add(1, Ordering::Relaxed)
        );
        let state_dir = std::env::temp_dir().join(format!("{id}-state"));
        let mut path = self.plugin_dirs;
        path.push(cni::system_plugin_dir().to_path_buf());
        let bridge = bridge_plugin(&state_dir);
        let mut plugins = vec![bridge];
        plugins.extend(self.chain);
        for p in &plugins {
            let ty = p["type"].as_str().unwrap_or_default();
            if cni::find_plugin(ty, &path).is_none() {
                return Err(HarnessError::PluginNotFound(ty.to_string(), path));
            }
        }
        // From here on, Drop of `inner` cleans up whatever was created.
        let inner = NodeInner {
            netns: format!("{id}-node"),
            id,
            state_dir,
            path,
            plugins,
            pods: AtomicU32::new(0),
            staged: Mutex::new(Vec::new()),
        };
        std::fs::create_dir_all(inner.state_dir.join("bin"))
            .map_err(|e| io(&inner.state_dir, e))?;
        set_mode(&inner.state_dir, 0o755)?;
        set_mode(&inner.state_dir.join("bin"), 0o755)?;
        process::run(&["ip", "netns", "add", &inner.netns], None)?;
        process::run(&["ip", "link", "set", "lo", "up"], Some(&inner.netns))?;
        tracing::info!(node = %inner.netns, "node created");
        Ok(Node {
            inner: Arc::new(inner),
        })
    }
}

struct NodeInner {
    id: String,
    netns: String,
    state_dir: PathBuf,
    path: Vec<PathBuf>,
    plugins: Vec<Value>,
    pods: AtomicU32,
    /// Binaries already copied into `state_dir/bin` (source, copy).
    staged: Mutex<Vec<(PathBuf, PathBuf)>>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        if let Err(e) = process::run(&["ip", "netns", "del", &self.netns], None) {
            tracing::warn!(node = %self.netns, error = %e, "removing node netns");
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// A node: a network namespace with the pod bridge, and the CNI chain that attaches
/// pods to it.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl Node {
    /// A node with the plain chain: bridge + host-local.
    pub fn new() -> Result<Node> {
        Node::builder().build()
    }

    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Name of the node's network namespace (where the bridge and host veths live).
    pub fn netns(&self) -> &str {
        &self.inner.netns
    }

    /// Starts a process in the node's own namespace (as root), where the bridge
    /// address [`GATEWAY`] is local: node-level daemons such as the agent run
    /// here and pods reach them through the bridge.
    pub fn spawn(&self, argv: &[&str]) -> Result<PodProcess> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        PodProcess::spawn(&self.inner.netns, 0, &argv)
    }

    /// Unique id of this node; every namespace it creates starts with it.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Creates a pod: a fresh network namespace, `loopback`, then CNI ADD through the
    /// whole chain with `prevResult` passed along. On failure everything that was
    /// set up is undone before the error is returned.
    pub fn add_pod(&self, name: &str, namespace: &str) -> Result<Pod> {
        let n = self.inner.pods.fetch_add(1, Ordering::Relaxed);
        let netns = format!("{}-p{n}", self.inner.id);
        process::run(&["ip", "netns", "add", &netns], None)?;
        // As container runtimes do, let any UID bind low ports inside the pod.
        let _ = process::run(
            &[
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start",
            ],
            Some(&netns),
        );
        let mut pod = Pod {
            node: self.clone(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            container_id: format!("{:0>16x}{:0>8x}", std::process::id(), n) + &"0".repeat(40),
            netns,
            ip: None,
            result: None,
            added: 0,
        };
        pod.attach()?;
        Ok(pod)
    }

    /// CNI DEL and namespace removal (what dropping the pod does), reporting errors.
    pub fn remove_pod(&self, mut pod: Pod) -> Result<()> {
        pod.detach()
    }

    /// Returns a path under which `program` can be executed by any UID. A
    /// program that every user can already reach is used in place; otherwise
    /// (a checkout under a private home, say) it is copied once into the node's
    /// world-readable bin directory. The copy is made by `cp` in its own process:
    /// if this process wrote the file, a thread forking concurrently could
    /// inherit the writable descriptor and make the exec fail with ETXTBSY.
    pub fn stage(&self, program: &Path) -> Result<PathBuf> {
        if !program.is_absolute() || world_executable(program) {
            return Ok(program.to_path_buf());
        }
        let mut staged = self.inner.staged.lock().expect("stage lock");
        if let Some((_, copy)) = staged.iter().find(|(src, _)| src == program) {
            return Ok(copy.clone());
        }
        let name = program.file_name().unwrap_or_default();
        let copy = self.inner.state_dir.join("bin").join(name);
        let (src, dst) = (program.display().to_string(), copy.display().to_string());
        process::run(&["cp", &src, &dst], None)?;
        process::run(&["chmod", "0755", &dst], None)?;
        staged.push((program.to_path_buf(), copy.clone()));
        Ok(copy)
    }

    fn invocation(&self, pod: &Pod, plugin_type: &str, command: &str) -> Result<cni::Invocation> {
        let plugin = cni::find_plugin(plugin_type, &self.inner.path).ok_or_else(|| {
            HarnessError::PluginNotFound(plugin_type.to_string(), self.inner.path.clone())
        })?;
        Ok(cni::Invocation {
            plugin,
            command: command.to_string(),
            container_id: pod.container_id.clone(),
            netns: pod.netns_path(),
            ifname: "eth0".into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                pod.namespace, pod.name, pod.container_id
            ),
            path: self.inner.path.clone(),
            run_in_netns: Some(self.inner.netns.clone()),
        })
    }

    fn list_name(&self) -> String {
        format!("{}-net", self.inner.id)
    }
}

/// A pod: a network namespace attached to the node through the CNI chain.
pub struct Pod {
    node: Node,
    name: String,
    namespace: String,
    container_id: String,
    netns: String,
    ip: Option<IpAddr>,
    /// Final result of the ADD chain (the `prevResult` DEL receives).
    result: Option<Value>,
    /// How many chain plugins completed ADD (DEL runs over exactly those).
    added: usize,
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub fn netns(&self) -> &str {
        &self.netns
    }
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.netns)
    }
    pub fn container_id(&self) -> &str {
        &self.container_id
    }
    pub fn node(&self) -> &Node {
        &self.node
    }
    /// The pod's IP address, from the chain's final result.
    pub fn ip(&self) -> IpAddr {
        self.ip.expect("an attached pod has an address")
    }
    /// The chain's final CNI result.
    pub fn cni_result(&self) -> &Value {
        self.result.as_ref().expect("an attached pod has a result")
    }

    fn attach(&mut self) -> Result<()> {
        let lo = self.node.invocation(self, "loopback", "ADD")?;
        let lo = cni::Invocation {
            ifname: "lo".into(),
            ..lo
        };
        let lo_conf = json!({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"});
        if let Err(e) = cni::invoke(&lo, &lo_conf) {
            let _ = self.detach();
            return Err(e.into());
        }
        let list = self.node.list_name();
        let mut prev: Option<Value> = None;
        for plugin in self.node.inner.plugins.clone() {
            let ty = plugin["type"].as_str().unwrap_or_default().to_string();
            let step = self.node.invocation(self, &ty, "ADD").and_then(|inv| {
                let conf = cni::plugin_config(&list, CNI_VERSION, &plugin, prev.as_ref());
                cni::invoke(&inv, &conf).map_err(HarnessError::from)
            });
            match step {
                Ok(result) => {
                    self.added += 1;
                    prev = Some(result);
                }
                Err(e) => {
                    self.result = prev;
                    // Runtimes call DEL for a failed ADD; it must clean up.
                    self.added = self.node.inner.plugins.len();
                    let _ = self.detach();
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let ip = result["ips"]
            .as_array()
            .and_then(|ips| ips.first())
            .and_then(|ip| ip["address"].as_str())
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<IpAddr>().ok());
        self.result = Some(result.clone());
        match ip {
            Some(ip) => {
                self.ip = Some(ip);
                tracing::info!(pod = %self.name, netns = %self.netns, %ip, "pod attached");
                Ok(())
            }
            None => {
                let _ = self.detach();
                Err(HarnessError::NoAddress {
                    pod: self.name.clone(),
                    result: result.to_string(),
                })
            }
        }
    }

    /// CNI DEL over the chain in reverse order, then removes the namespace. Every
    /// step is attempted; the first error is returned.
    fn detach(&mut self) -> Result<()> {
        let mut first_err: Option<HarnessError> = None;
        let list = self.node.list_name();
        let plugins = self.node.inner.plugins.clone();
        for plugin in plugins.iter().take(self.added).rev() {
            let ty = plugin["type"].as_str().unwrap_or_default();
            let step = self.node.invocation(self, ty, "DEL").and_then(|inv| {
                let conf = cni::plugin_config(&list, CNI_VERSION, plugin, self.result.as_ref());
                cni::invoke(&inv, &conf)
                    .map(|_| ())
                    .map_err(HarnessError::from)
            });
            if let Err(e) = step {
                first_err.get_or_insert(e);
            }
        }
        self.added = 0;
        if Path::new("/var/run/netns").join(&self.netns).exists() {
            if let Err(e) = process::run(&["ip", "netns", "del", &self.netns], None) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs a command to completion inside the pod's namespace as `uid` (gid = uid,
    /// no supplementary groups). A non-zero exit is not an error here: callers
    /// inspect the returned output.
    pub fn exec(&self, uid: u32, argv: &[&str]) -> Result<std::process::Output> {
        let argv = self.staged_argv(uid, argv)?;
        process::output(&self.netns, uid, &argv)
    }

    /// Starts a long-running process inside the pod's namespace as `uid`. It is
    /// killed and reaped when the returned handle is dropped.
    pub fn spawn(&self, uid: u32, argv: &[&str]) -> Result<PodProcess> {
        let argv = self.staged_argv(uid, argv)?;
        PodProcess::spawn(&self.netns, uid, &argv)
    }

    fn staged_argv(&self, uid: u32, argv: &[&str]) -> Result<Vec<String>> {
        let mut out: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        if uid != 0 {
            if let Some(first) = out.first_mut() {
                *first = self.node.stage(Path::new(first))?.display().to_string();
            }
        }
        Ok(out)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            tracing::warn!(pod = %self.name, error = %e, "pod teardown");
        }
    }
}

/// Whether any user can execute `path`: the file and every directory above it
/// carry the "others may execute/search" bit.
pub fn world_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    ok(path) && path.ancestors().skip(1).all(ok)
}

fn io(path: &Path, source: std::io::Error) -> HarnessError {
    HarnessError::Io {
        context: path.display().to_string(),
        source,
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io(path, e))
}

/// Names of the network namespaces that currently exist.
pub fn netns_list() -> Result<Vec<String>> {
    let out = process::run(&["ip", "netns", "list"], None)?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Names of the links in the caller's namespace.
pub fn link_names() -> Result<Vec<String>> {
    let out = process::run(&["ip", "-o", "link", "show"], None)?;
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect();
    names.sort();
    Ok(names)
}
