//! The error of sidecar injection and the helper that builds its bad-annotation
//! case; its own file so `inject` and the readers under it share it without
//! using each other.

use mesh_api::annotations::AnnotationError;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error("invalid annotation {key}: {value:?}: {reason}")]
    BadAnnotation {
        key: String,
        value: String,
        reason: String,
    },
    #[error("not a pod: {0}")]
    NotAPod(String),
}

pub(super) fn bad_annotation(key: &str, value: &str, reason: impl Into<String>) -> InjectError {
    InjectError::BadAnnotation {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}
