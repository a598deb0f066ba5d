//! Where the proxy's configuration comes from: the config-sync agent's stream
//! (the normal case), an embedded agent over a folder of YAML (standalone), or a
//! [`ProxyView`] file re-read when it changes. Whatever the source, a view that
//! cannot be used is rejected with a reason and the last good snapshot stays in
//! force; accepted views replace the snapshot atomically.

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

/// Subscribes to the agent at `addr` and applies every view it sends (ACKed);
/// runs until `shutdown`. Over TLS the subscription carries the pod's CA
/// credential (`--ca-token-file`), re-read at every (re)connection.
pub fn follow_agent(
    addr: String,
    transport: mesh_agent::client::Transport,
    shared: Arc<Shared>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let cfg = &shared.cfg;
    let identity = mesh_api::syncapi::ProxyIdentity {
        pod: cfg.pod.clone(),
        namespace: cfg.namespace.clone(),
        service_account: cfg.service_account.clone(),
        labels: cfg.labels.clone(),
        ips: cfg.instance_ip.iter().map(|ip| ip.to_string()).collect(),
    };
    let sh = shared.clone();
    let apply = move |view: &ProxyView| -> Result<(), String> {
        let version = view.version;
        sh.store
            .store(Snapshot::compile(view.clone(), &sh.cfg.namespace));
        tracing::info!(version, "snapshot applied");
        Ok(())
    };
    let mut client = mesh_agent::client::ClientConfig::new(addr, identity);
    client.transport = transport;
    client.token_file = cfg.cert.as_ref().map(|c| c.token_file.clone());
    let _state = mesh_agent::client::spawn(client, apply, shutdown);
}

#[derive(clap::Parser)]
struct EmbeddedAgent {
    #[command(flatten)]
    cfg: mesh_agent::config::Config,
}

/// Standalone mode: runs an agent with the `files` source on loopback inside this
/// process and follows it like any proxy would.
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
    let plain = mesh_agent::client::Transport::Plaintext;
    follow_agent(running.sync_addr.to_string(), plain, shared, shutdown);
    tokio::spawn(async move {
        if let Err(e) = running.wait().await {
            tracing::error!(error = %e, "embedded agent stopped");
        }
    });
    Ok(())
}
