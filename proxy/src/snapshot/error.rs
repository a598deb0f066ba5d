//! Why a view is refused: each resource the proxy cannot use, and the whole
//! refusal the source NACKs. Apart so the cluster compiling and the snapshot
//! both report through them.

/// One resource of a view the proxy cannot use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResourceError {
    /// `VirtualService/namespace/name` or `DestinationRule/<host>`.
    pub resource: String,
    /// The field path and why, e.g. `http[0].match[0].uri: invalid regex ...`.
    pub error: String,
}

impl std::fmt::Display for ResourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.resource, self.error)
    }
}

/// A view the proxy refuses, with every reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("version {version} cannot be applied: {}", join(.errors))]
pub struct CompileError {
    pub version: u64,
    pub errors: Vec<ResourceError>,
}

fn join(errors: &[ResourceError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
