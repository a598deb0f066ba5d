//! Who is asking for a certificate. In Kubernetes Istio's CA reviews the pod's
//! projected service-account token (audience `istio-ca`); in local/files mode a
//! per-pod credential plays that role: a token file the operator (or `meshctl
//! local`) writes for each pod and mounts into its proxy, listed in the agent's
//! tokens file as `<token> <namespace> <service-account>` per line. The file is
//! re-read on every request, so adding a pod needs no restart.

use mesh_api::Identity;
use std::path::PathBuf;

/// Why a caller is not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credential presented")]
    Empty,
    #[error("the credential is not known to the CA")]
    Unknown,
    #[error("the CA has no way to authenticate callers (start the agent with --ca-tokens FILE)")]
    NotConfigured,
    #[error("tokens file {path}: {why}")]
    File { path: String, why: String },
}

/// How callers prove their identity.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// `<token> <namespace> <service-account>` lines.
    LocalTokens {
        file: PathBuf,
        trust_domain: String,
    },
    None,
}

impl Authenticator {
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Empty);
        }
        match self {
            Authenticator::None => Err(AuthError::NotConfigured),
            Authenticator::LocalTokens { file, trust_domain } => {
                let text = tokio::fs::read_to_string(file)
                    .await
                    .map_err(|e| AuthError::File {
                        path: file.display().to_string(),
                        why: e.to_string(),
                    })?;
                lookup(&text, token, trust_domain).map_err(|e| match e {
                    AuthError::File { why, .. } => AuthError::File {
                        path: file.display().to_string(),
                        why,
                    },
                    other => other,
                })
            }
        }
    }
}

/// Finds `token` in a tokens file's text (constant-time comparison per entry).
pub fn lookup(text: &str, token: &str, trust_domain: &str) -> Result<Identity, AuthError> {
    let mut found = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [t, ns, sa] = f.as_slice() else {
            return Err(AuthError::File {
                path: String::new(),
                why: format!(
                    "line {} is not \"<token> <namespace> <service-account>\"",
                    n + 1
                ),
            });
        };
        if ct_eq(t.as_bytes(), token.as_bytes()) && found.is_none() {
            found = Some(
                Identity::new(trust_domain, *ns, *sa).map_err(|e| AuthError::File {
                    path: String::new(),
                    why: format!("line {}: {e}", n + 1),
                })?,
            );
        }
    }
    found.ok_or(AuthError::Unknown)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
