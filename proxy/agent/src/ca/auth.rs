//! Who is asking for a certificate. In Kubernetes, as Istio's CA does, the pod's
//! projected service-account token is checked with a TokenReview (audience
//! `istio-ca`) and the identity is the reviewed user
//! `system:serviceaccount:<ns>:<sa>`; in local/files mode a
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
    #[error("TokenReview failed: {0}")]
    Review(String),
    #[error("the token was not authenticated by the API server{0}")]
    Unauthenticated(String),
    #[error("the token is not for audience {AUDIENCE:?} (audiences {0:?})")]
    Audience(Vec<String>),
    #[error("the token's user {0:?} is not a service account")]
    NotServiceAccount(String),
}

/// The audience of the projected token Istio mounts for its CA.
pub const AUDIENCE: &str = "istio-ca";

/// How callers prove their identity.
#[derive(Clone)]
pub enum Authenticator {
    /// `<token> <namespace> <service-account>` lines.
    LocalTokens {
        file: PathBuf,
        trust_domain: String,
    },
    /// TokenReview against the API server.
    Kubernetes {
        client: kube::Client,
        trust_domain: String,
    },
    None,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authenticator::LocalTokens { file, .. } => write!(f, "LocalTokens({})", file.display()),
            Authenticator::Kubernetes { .. } => f.write_str("TokenReview"),
            Authenticator::None => f.write_str("None"),
        }
    }
}

impl Authenticator {
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Empty);
        }
        match self {
            Authenticator::None => Err(AuthError::NotConfigured),
            Authenticator::Kubernetes {
                client,
                trust_domain,
            } => review(client, token, trust_domain).await,
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

async fn review(
    client: &kube::Client,
    token: &str,
    trust_domain: &str,
) -> Result<Identity, AuthError> {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let tr = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![AUDIENCE.to_string()]),
        },
        ..Default::default()
    };
    let api = kube::Api::<TokenReview>::all(client.clone());
    let done = api
        .create(&kube::api::PostParams::default(), &tr)
        .await
        .map_err(|e| AuthError::Review(e.to_string()))?;
    let status = done.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        let why = status.error.map(|e| format!(": {e}")).unwrap_or_default();
        return Err(AuthError::Unauthenticated(why));
    }
    let audiences = status.audiences.unwrap_or_default();
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return Err(AuthError::Audience(audiences));
    }
    let user = status.user.and_then(|u| u.username).unwrap_or_default();
    service_account_identity(&user, trust_domain)
}

/// `system:serviceaccount:<ns>:<sa>` → the SPIFFE identity.
pub fn service_account_identity(user: &str, trust_domain: &str) -> Result<Identity, AuthError> {
    let bad = || AuthError::NotServiceAccount(user.to_string());
    let rest = user
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(bad)?;
    let (ns, sa) = rest.split_once(':').ok_or_else(bad)?;
    Identity::new(trust_domain, ns, sa).map_err(|_| bad())
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
