//! Running CNI plugins through the CNI protocol, exactly as a container runtime
//! does: the command and attachment in `CNI_*` environment variables, the network
//! configuration (with `prevResult` when chained) on stdin, the result or a CNI
//! error object on stdout. Written once; the harness chains Debian's plugins with it,
//! and later tests chain `mesh-cni` after them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// One plugin call.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Plugin binary (absolute path).
    pub plugin: PathBuf,
    /// `ADD`, `DEL`, `CHECK`, `VERSION`, `STATUS` or `GC`.
    pub command: String,
    pub container_id: String,
    /// Path of the pod's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS`, e.g. `K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0`.
    pub args: String,
    /// `CNI_PATH`: where chained and IPAM plugins are looked up.
    pub path: Vec<PathBuf>,
    /// Run the plugin inside this named netns (the "node"), as a kubelet on that
    /// node would; `None` runs it in the caller's namespace.
    pub run_in_netns: Option<String>,
}

/// A plugin call that failed: which plugin, which command, which netns, and what
/// it said.
#[derive(Debug, thiserror::Error)]
#[error(
    "CNI plugin {plugin} {command} for netns {netns} failed ({status}): {message}\nstderr: {stderr}"
)]
pub struct CniError {
    pub plugin: String,
    pub command: String,
    pub netns: String,
    pub status: String,
    /// The `msg` (and `details`) of the plugin's CNI error object, or its raw stdout.
    pub message: String,
    /// The CNI error `code`, when the plugin returned an error object.
    pub code: Option<u64>,
    pub stderr: String,
}

/// Finds a plugin binary by type name along a CNI path.
pub fn find_plugin(name: &str, path: &[PathBuf]) -> Option<PathBuf> {
    path.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Runs one plugin. On success returns its stdout parsed as JSON (`Value::Null`
/// for commands that print nothing, such as `DEL`).
pub fn invoke(inv: &Invocation, config: &Value) -> Result<Value, CniError> {
    let fail = |status: String, message: String, code: Option<u64>, stderr: String| CniError {
        plugin: inv.plugin.display().to_string(),
        command: inv.command.clone(),
        netns: inv.netns.display().to_string(),
        status,
        message,
        code,
        stderr,
    };
    let mut cmd = match &inv.run_in_netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&inv.plugin);
            c
        }
        None => Command::new(&inv.plugin),
    };
    cmd.env("CNI_COMMAND", &inv.command)
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", &inv.netns)
        .env("CNI_IFNAME", &inv.ifname)
        .env("CNI_ARGS", &inv.args)
        .env("CNI_PATH", join_path(&inv.path))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail("not started".into(), e.to_string(), None, String::new()))?;
    let input = serde_json::to_vec(config).expect("JSON value serializes");
    // A plugin that exits before reading stdin is reported by its exit status below.
    let _ = child.stdin.take().expect("piped stdin").write_all(&input);
    let out = child
        .wait_with_output()
        .map_err(|e| fail("not awaited".into(), e.to_string(), None, String::new()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let parsed: Option<Value> = serde_json::from_str(stdout.trim()).ok();
    if !out.status.success() {
        let (message, code) = match &parsed {
            Some(v) if v.get("code").is_some() => (
                format!(
                    "{}{}",
                    v["msg"].as_str().unwrap_or(""),
                    v.get("details")
                        .and_then(Value::as_str)
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ),
                v["code"].as_u64(),
            ),
            _ => (stdout.trim().to_string(), None),
        };
        return Err(fail(out.status.to_string(), message, code, stderr));
    }
    match parsed {
        Some(v) => Ok(v),
        None if stdout.trim().is_empty() => Ok(Value::Null),
        None => Err(fail(
            out.status.to_string(),
            format!("plugin printed non-JSON output: {stdout:?}"),
            None,
            stderr,
        )),
    }
}

fn join_path(path: &[PathBuf]) -> String {
    path.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// The network configuration one plugin of a chain receives: its own entry of the
/// conflist plus the list's `name` and `cniVersion`, and the previous result.
pub fn plugin_config(
    list_name: &str,
    version: &str,
    plugin: &Value,
    prev_result: Option<&Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = Value::String(list_name.to_string());
    conf["cniVersion"] = Value::String(version.to_string());
    if let Some(prev) = prev_result {
        conf["prevResult"] = prev.clone();
    }
    conf
}

/// Default directory of Debian's `containernetworking-plugins`.
pub fn system_plugin_dir() -> &'static Path {
    Path::new("/usr/lib/cni")
}
