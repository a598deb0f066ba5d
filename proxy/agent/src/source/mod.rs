//! Where the agent's objects come from. Every source turns its input into the same
//! [`SourceEvent`]s, so the compiler cannot tell a folder from a cluster.

pub mod files;
pub mod kubernetes;

pub use crate::store::SourceEvent;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// Why a source stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("config folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {source}")]
    Watch { path: String, source: notify::Error },
    #[error("kubernetes client: {0}")]
    Kube(String),
}

/// A producer of [`SourceEvent`]s that runs until `shutdown` fires.
pub trait Source: Send + 'static {
    fn run(
        self: Box<Self>,
        events: UnboundedSender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;
}
