//! The mesh config file (the `mesh` key of the mesh-config ConfigMap, Istio
//! MeshConfig YAML plus our injector values) as both `mesh-agent` and
//! `mesh-webhook` read it, so the two accept exactly the same files.
//!
//! Istio's MeshConfig has far more fields than the mesh uses, and users paste
//! theirs: unknown top-level fields (and unknown `defaultConfig` fields) are
//! accepted and reported as ignored. Fields we do know are typed and validated,
//! so a wrong value (`outboundTrafficPolicy: {mode: SOMETIMES}`) is an error naming
//! the field and the value; a typo inside one of our own blocks (`images.proxyy`)
//! is an error too, since there it can only be a mistake.
//!
//! [`watch`] re-reads the file on change and keeps the last good config when an
//! edit is bad.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_api::meshconfig::{MeshConfig, MeshConfigError};
use serde_json::Value;
use tokio::sync::watch as tokio_watch;

/// `defaultConfig` fields of Istio's ProxyConfig that we type (the rest is ignored).
const PROXY_CONFIG_FIELDS: [&str; 7] = [
    "concurrency",
    "drainDuration",
    "terminationDrainDuration",
    "holdApplicationUntilProxyStarts",
    "interceptionMode",
    "proxyMetadata",
    "tracing",
];

/// Why a mesh config file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshFileError {
    #[error("cannot read mesh config {path}: {error}")]
    Read { path: String, error: String },
    #[error("mesh config is not valid YAML: {0}")]
    Yaml(String),
    #[error("mesh config must be a YAML mapping, got {0}")]
    NotMapping(String),
    #[error("mesh config field {path}: {message}")]
    Field { path: String, message: String },
    #[error(transparent)]
    Invalid(#[from] MeshConfigError),
    #[error("mesh config field enableAutoMtls: {0} is not a boolean")]
    AutoMtls(String),
}

/// A mesh config as read: the typed config, Istio fields outside our schema that
/// we read anyway, and what was ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshFile {
    pub mesh: MeshConfig,
    /// Istio's `enableAutoMtls` (default true).
    pub enable_auto_mtls: bool,
    /// Field paths present in the file that the mesh does not use.
    pub ignored: Vec<String>,
}

impl Default for MeshFile {
    fn default() -> Self {
        MeshFile {
            mesh: MeshConfig::default(),
            enable_auto_mtls: true,
            ignored: Vec::new(),
        }
    }
}

/// Parses and validates mesh config text. Empty text is the default config.
pub fn parse(text: &str) -> Result<MeshFile, MeshFileError> {
    if text.trim().is_empty() {
        return Ok(MeshFile::default());
    }
    let v: Value = serde_yaml_ng::from_str(text).map_err(|e| MeshFileError::Yaml(e.to_string()))?;
    let mut map = match v {
        Value::Object(m) => m,
        Value::Null => return Ok(MeshFile::default()),
        other => return Err(MeshFileError::NotMapping(kind_of(&other).into())),
    };
    let known = match serde_json::to_value(MeshConfig::default()) {
        Ok(Value::Object(m)) => m,
        _ => Default::default(),
    };
    let mut ignored = Vec::new();
    let enable_auto_mtls = match map.remove("enableAutoMtls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(other) => return Err(MeshFileError::AutoMtls(other.to_string())),
    };
    map.retain(|k, _| {
        let keep = known.contains_key(k);
        if !keep {
            ignored.push(k.clone());
        }
        keep
    });
    if let Some(Value::Object(dc)) = map.get_mut("defaultConfig") {
        dc.retain(|k, _| {
            let keep = PROXY_CONFIG_FIELDS.contains(&k.as_str());
            if !keep {
                ignored.push(format!("defaultConfig.{k}"));
            }
            keep
        });
    }
    let mesh: MeshConfig =
        serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| MeshFileError::Field {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        })?;
    mesh.validate()?;
    Ok(MeshFile {
        mesh,
        enable_auto_mtls,
        ignored,
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "something else",
    }
}

/// Reads and parses a mesh config file.
pub fn load(path: &Path) -> Result<MeshFile, MeshFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| MeshFileError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    parse(&text)
}

/// Polls `path` every `every`; publishes each new good config, logs and skips bad
/// ones (the last good config stays), until `stop` is cancelled. ConfigMap volumes
/// swap a symlink, so the content is compared rather than the mtime.
pub fn watch(
    path: PathBuf,
    first: MeshFile,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> tokio_watch::Receiver<Arc<MeshFile>> {
    let (tx, rx) = tokio_watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let mut last_text = std::fs::read_to_string(&path).ok();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if last_text.as_deref() == Some(text.as_str()) {
                continue;
            }
            last_text = Some(text.clone());
            match parse(&text) {
                Ok(m) => {
                    tracing::info!(path = %path.display(), ignored = ?m.ignored, "mesh config reloaded");
                    tx.send_replace(Arc::new(m));
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "mesh config edit rejected; keeping the last good config"
                ),
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_fields_we_do_not_use_are_accepted_and_listed() {
        let m = parse(
            "accessLogFile: /dev/stdout\nenablePrometheusMerge: true\nenableAutoMtls: false\n\
             defaultConfig: {discoveryAddress: istiod:15012, drainDuration: 30s}\n\
             outboundTrafficPolicy: {mode: REGISTRY_ONLY}\nrootNamespace: mesh-root\n",
        )
        .unwrap();
        assert_eq!(m.mesh.access_log_file, "/dev/stdout");
        assert_eq!(m.mesh.root_namespace, "mesh-root");
        assert!(!m.enable_auto_mtls);
        assert_eq!(
            m.ignored,
            ["enablePrometheusMerge", "defaultConfig.discoveryAddress"]
        );
        assert_eq!(m.mesh.default_config.drain_duration.as_deref(), Some("30s"));
    }

    #[test]
    fn bad_values_name_the_field_and_value() {
        for (text, want) in [
            (
                "outboundTrafficPolicy: {mode: SOMETIMES}",
                "outboundTrafficPolicy.mode",
            ),
            ("enableAutoMtls: maybe", "maybe"),
            ("images: {proxyy: x}", "proxyy"),
            ("defaultConfig: {drainDuration: soon}", "soon"),
            ("- a\n- b", "list"),
            ("trustDomain: [1]", "trustDomain"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert_eq!(parse("").unwrap(), MeshFile::default());
    }
}
