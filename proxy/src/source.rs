//! Where the proxy's configuration comes from. Standalone mode reads a
//! [`ProxyView`] from a file (JSON or YAML) and re-reads it when it changes; a
//! file that does not parse is rejected with a logged reason and the last good
//! snapshot stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_api::syncapi::ProxyView;

use crate::shared::Shared;
use crate::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ProxyView: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Parses a view file (JSON, or YAML when it is not JSON).
pub fn read_view(path: &Path) -> Result<ProxyView, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_err = |message: String| SourceError::Parse {
        path: path.to_path_buf(),
        message,
    };
    if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| parse_err(e.to_string()))
    }
}

/// Applies `path` now and whenever its modification time or size changes.
pub async fn watch_view_file(path: PathBuf, shared: Arc<Shared>) {
    let mut seen: Option<(SystemTime, u64)> = None;
    loop {
        let stamp = std::fs::metadata(&path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some() && stamp != seen {
            seen = stamp;
            match read_view(&path) {
                Ok(view) => {
                    let version = view.version;
                    shared
                        .store
                        .store(Snapshot::compile(view, &shared.cfg.namespace));
                    tracing::info!(version, file = %path.display(), "snapshot applied");
                }
                Err(e) => {
                    tracing::error!(error = %e, "view rejected; keeping the last good snapshot")
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
