//! The runtime's error type, below every module that returns it: `lib.rs`
//! re-exports it and `process` uses it without reaching back up to the root.

use std::path::PathBuf;

use crate::cni;

/// What went wrong while building or driving the node.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("`{command}` failed ({status}){}: {stderr}", netns.as_ref().map(|n| format!(" in netns {n}")).unwrap_or_default())]
    Command {
        command: String,
        netns: Option<String>,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Cni(#[from] cni::CniError),
    #[error("CNI plugin {0:?} not found in {1:?}")]
    PluginNotFound(String, Vec<PathBuf>),
    #[error("CNI result for pod {pod} has no IP address: {result}")]
    NoAddress { pod: String, result: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited ({status}) before it was ready; its output: {output:?}")]
    Exited {
        what: String,
        status: String,
        output: Vec<String>,
    },
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
}

pub type Result<T> = std::result::Result<T, HarnessError>;
