//! Running work inside another network namespace. The work runs on a dedicated thread
//! that enters the namespace with `setns` and then ends: no thread of the caller ever
//! changes namespace, so nothing has to be restored on any path (error, panic or ok),
//! and child processes spawned by that thread (iptables-restore) inherit its netns.

use std::fs::File;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path} does not exist")]
    Missing { path: String },
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter { path: String, source: nix::Error },
    #[error("work inside network namespace {path} panicked: {msg}")]
    Panicked { path: String, msg: String },
}

/// Runs `f` inside the network namespace at `path` and returns its result.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            NetnsError::Missing {
                path: shown.clone(),
            }
        } else {
            NetnsError::Open {
                path: shown.clone(),
                source: e,
            }
        }
    })?;
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok::<T, nix::Error>(f())
        });
        match handle.join() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(NetnsError::Enter {
                path: shown.clone(),
                source: e,
            }),
            Err(p) => Err(NetnsError::Panicked {
                path: shown.clone(),
                msg: panic_message(&p),
            }),
        }
    })
}

/// The text of a panic payload.
pub fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}
