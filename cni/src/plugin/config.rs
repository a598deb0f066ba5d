//! The plugin's network configuration (its entry in the conflist, as the runtime passes
//! it on stdin) and the CNI error type with the spec's codes.

use std::path::PathBuf;

use mesh_api::RedirectDefaults;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::flags::BackendChoice;
use crate::plugin::pod::KubernetesSource;

/// CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Error codes of the CNI spec (and ours from 100 up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_READY: u32 = 50;
    /// The pod's annotations do not give valid redirect parameters.
    pub const BAD_POD: u32 = 100;
    /// The capture could not be written, or is incomplete (CHECK).
    pub const CAPTURE_FAILED: u32 = 101;
    pub const INTERNAL: u32 = 999;
}

/// A CNI error result: printed as JSON on stdout, with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}: {details}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl ToString) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.to_string(),
        }
    }

    pub fn to_json(&self, version: &str) -> String {
        serde_json::json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

fn default_excluded() -> Vec<String> {
    vec!["kube-system".to_string()]
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/run/mesh-cni")
}

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prev_result: Option<Box<RawValue>>,
    /// Local mode and tests: a folder of pod YAML.
    #[serde(default)]
    pub pod_dir: Option<PathBuf>,
    #[serde(default)]
    pub kubernetes: Option<KubernetesSource>,
    #[serde(default = "default_excluded")]
    pub exclude_namespaces: Vec<String>,
    #[serde(default)]
    pub iptables_backend: BackendChoice,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Written by the installer when it has finished; STATUS is not-ready without it.
    #[serde(default)]
    pub ready_file: Option<PathBuf>,
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub redirect_defaults: RedirectDefaults,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// Parses stdin; any failure is the right CNI error.
pub fn parse(stdin: &[u8]) -> Result<(NetConf, String), CniError> {
    let v: serde_json::Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(code::DECODE, "cannot decode network configuration", e))?;
    let version = match v.get("cniVersion") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid cniVersion",
                format!("cniVersion is {other}"),
            ))
        }
        None => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "missing cniVersion",
                "the network configuration has no cniVersion",
            ))
        }
    };
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "config is {version:?}, plugin supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let conf: NetConf = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(code::INVALID_CONFIG, "invalid network configuration", e))?;
    Ok((conf, version))
}
