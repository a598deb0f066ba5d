//! The vocabulary of a validation: [`Severity`], [`Finding`] and the [`Report`]
//! the checks write into. Its own file so every check file can use it without
//! depending on `validate/mod.rs`, which uses the check files.

use mesh_api::resource::ResourceKey;
use std::fmt;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub resource: ResourceKey,
    /// Field path from the object root, e.g. `spec.http[0].route[1].weight`.
    pub path: String,
    /// The offending value as written (JSON), empty when the field is missing.
    pub value: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{sev}: {}: {}: {}",
            self.resource, self.path, self.message
        )?;
        if !self.value.is_empty() {
            write!(f, " (value {})", self.value)?;
        }
        Ok(())
    }
}

/// Collects findings for one resource while checks walk it.
pub struct Report<'a> {
    key: &'a ResourceKey,
    pub findings: Vec<Finding>,
}

impl<'a> Report<'a> {
    pub fn new(key: &'a ResourceKey) -> Self {
        Report {
            key,
            findings: Vec::new(),
        }
    }

    /// Records an error at `path` about `value` (anything serializable; `()` for "missing").
    pub fn error(
        &mut self,
        path: impl Into<String>,
        value: impl serde::Serialize,
        msg: impl Into<String>,
    ) {
        self.push(Severity::Error, path.into(), value, msg.into());
    }

    /// Records a warning.
    pub fn warn(
        &mut self,
        path: impl Into<String>,
        value: impl serde::Serialize,
        msg: impl Into<String>,
    ) {
        self.push(Severity::Warning, path.into(), value, msg.into());
    }

    fn push(
        &mut self,
        severity: Severity,
        path: String,
        value: impl serde::Serialize,
        message: String,
    ) {
        let value = match serde_json::to_value(value) {
            Ok(serde_json::Value::Null) | Err(_) => String::new(),
            Ok(v) => v.to_string(),
        };
        self.findings.push(Finding {
            severity,
            resource: self.key.clone(),
            path,
            value,
            message,
        });
    }
}
