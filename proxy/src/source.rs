//! Where the proxy's configuration comes from: the config-sync agent's stream
//! (the normal case), an embedded agent over a folder of YAML (standalone; only
//! in builds with the `embedded-agent` feature), or a [`ProxyView`] file re-read
//! when it changes. Whatever the source, a view that
//! cannot be used is rejected with a reason and the last good snapshot stays in
//! force; accepted views replace the snapshot atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_api::syncapi::ProxyView;

use crate::shared::Shared;
use crate::snapshot::{CompileError, Snapshot};

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
    let bytes = std::fs::read(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_err = |message: String| SourceError::Parse {
        path: path.to_path_buf(),
        message,
    };
    // Every view is decoded by the one `from_slice` the sync stream uses:
    // each other way in (`from_str`, a YAML deserializer) would compile the
    // whole ProxyView decoder once more into the sidecar (serde code is
    // generated per deserializer; a YAML copy cost ~0.7 MB of text). YAML
    // goes through a generic JSON value instead.
    let json = if bytes.trim_ascii_start().starts_with(b"{") {
        bytes
    } else {
        let text = String::from_utf8(bytes).map_err(|e| parse_err(e.to_string()))?;
        let value: serde_json::Value =
            serde_yaml_ng::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
        serde_json::to_vec(&value).map_err(|e| parse_err(e.to_string()))?
    };
    mesh_api::sharedstr::interning(|| serde_json::from_slice(&json))
        .map_err(|e| parse_err(e.to_string()))
}

/// Compiles `view` and installs it. A view the proxy cannot fully compile is
/// refused whole: the current snapshot stays, the rejection is kept for the
/// config dump, each bad resource gets one log line and the refusal is counted.
/// Settings applied but decided against are logged and counted too.
pub fn apply_view(shared: &Shared, view: impl Into<Arc<ProxyView>>) -> Result<(), CompileError> {
    let view = view.into();
    let version = view.version;
    match Snapshot::compile(view, &shared.cfg.namespace) {
        Ok(snap) => {
            for w in &snap.warnings {
                tracing::warn!(version, "config applied with a problem: {w}");
            }
            shared.metrics.config_warnings(snap.warnings.len());
            shared.install(snap);
            tracing::info!(version, "snapshot applied");
            Ok(())
        }
        Err(e) => {
            for r in &e.errors {
                tracing::error!(version, resource = %r.resource, error = %r.error,
                    "view rejected; keeping the last good snapshot");
            }
            shared.metrics.config_rejected();
            shared.store.reject(e.clone());
            Err(e)
        }
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
                // `apply_view` logs and records the outcome either way.
                Ok(view) => {
                    let _ = apply_view(&shared, view);
                }
                Err(e) => {
                    tracing::error!(error = %e, "view rejected; keeping the last good snapshot");
                    shared.metrics.config_rejected();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subscribes to the agent at `addr` and applies every view it sends (ACKed, or
/// NACKed with the reason when it cannot be compiled); runs until `shutdown`.
/// Over TLS the subscription carries the pod's CA credential
/// (`--ca-token-file`), re-read at every (re)connection, until the proxy holds
/// a workload certificate: from then on each (re)connection presents the
/// current one as TLS client certificate instead.
pub fn follow_agent(
    addr: String,
    transport: mesh_api::syncclient::Transport,
    shared: Arc<Shared>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let cfg = &shared.cfg;
    let identity = cfg.identity();
    let sh = shared.clone();
    let apply = ApplyToProxy(sh);
    let mut client = mesh_api::syncclient::ClientConfig::new(addr, identity);
    client.transport = transport;
    client.token_file = cfg.cert.as_ref().map(|c| c.token_file.clone());
    client.idle = cfg.on_demand_idle;
    if cfg.cert.is_some() {
        let tls = shared.tls.clone();
        client.client_cert = Some(mesh_api::syncclient::CurrentCert(Arc::new(move || {
            tls.current().map(|c| c.client_cert())
        })));
    }
    let client = mesh_api::syncclient::spawn_client(client, apply, shutdown);
    let _ = shared.lookups.set(client);
}

/// Compiles and installs each view the agent sends; a refused view is NACKed
/// with every resource and reason. The snapshot shares the client's view.
struct ApplyToProxy(Arc<Shared>);

impl mesh_api::syncclient::Apply for ApplyToProxy {
    fn apply(&mut self, view: &ProxyView) -> Result<(), String> {
        self.apply_shared(&Arc::new(view.clone()))
    }

    fn apply_shared(&mut self, view: &Arc<ProxyView>) -> Result<(), String> {
        apply_view(&self.0, view.clone()).map_err(|e| e.to_string())
    }
}

#[cfg(feature = "embedded-agent")]
#[derive(clap::Parser)]
struct EmbeddedAgent {
    #[command(flatten)]
    cfg: mesh_agent::config::Config,
}

/// Standalone mode: runs an agent with the `files` source on loopback inside this
/// process and follows it like any proxy would.
#[cfg(feature = "embedded-agent")]
pub async fn embedded_agent(
    dir: PathBuf,
    shared: Arc<Shared>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    use clap::Parser as _;
    let dir_s = dir.display().to_string();
    let parsed = EmbeddedAgent::try_parse_from([
        "embedded-agent",
        "--config-dir",
        &dir_s,
        "--listen",
        "127.0.0.1:0",
        "--debug-listen",
        "127.0.0.1:0",
        "--agent-name",
        "embedded",
    ])
    .map_err(|e| e.to_string())?;
    let cfg = parsed.cfg;
    cfg.validate().map_err(|e| e.to_string())?;
    let source = Box::new(mesh_agent::source::files::FilesSource {
        dir: dir.clone(),
        debounce: cfg.debounce(),
    });
    let running = mesh_agent::agent::start(&cfg, source, shutdown.clone())
        .await
        .map_err(|e| e.to_string())?;
    // The embedded agent runs no CA: its loopback port is plaintext.
    let plain = mesh_api::syncclient::Transport::Plaintext;
    follow_agent(running.sync_addr.to_string(), plain, shared, shutdown);
    tokio::spawn(async move {
        if let Err(e) = running.wait().await {
            tracing::error!(error = %e, "embedded agent stopped");
        }
    });
    Ok(())
}

/// Without the `embedded-agent` feature there is no agent to embed: the
/// configuration already refuses `--config-dir` (`config::pick_source`), so
/// this only answers a caller that skipped validation.
#[cfg(not(feature = "embedded-agent"))]
pub async fn embedded_agent(
    dir: PathBuf,
    _shared: Arc<Shared>,
    _shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    Err(crate::config::ConfigError::NoEmbeddedAgent(dir.display().to_string()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view file may be JSON or YAML; both decode to the same view, and a
    /// file that is neither names itself in the error.
    #[test]
    fn view_files_in_json_and_yaml_decode_alike() {
        let dir = std::env::temp_dir().join(format!("mesh-view-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let view = ProxyView {
            version: 7,
            ..Default::default()
        };
        let json = dir.join("v.json");
        std::fs::write(&json, serde_json::to_vec(&view).unwrap()).unwrap();
        let yaml = dir.join("v.yaml");
        let value: serde_json::Value = serde_json::to_value(&view).unwrap();
        std::fs::write(&yaml, serde_yaml_ng::to_string(&value).unwrap()).unwrap();
        assert_eq!(read_view(&json).unwrap(), view);
        assert_eq!(read_view(&yaml).unwrap(), view);
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "version: [not, a, number]\n").unwrap();
        let e = read_view(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{} is not a valid ProxyView", bad.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
