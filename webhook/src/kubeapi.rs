//! The few Kubernetes API calls self-managed mode needs (GET, POST, PUT, JSON PATCH),
//! sent through a kube-rs [`kube::Client`]: kube-rs owns the connection pool, TLS,
//! and the service-account token (re-read as the kubelet rotates it). The calls
//! stay raw JSON on a path because the objects involved (a Secret, webhook
//! configurations) are patched field by field, and a non-2xx answer stays an
//! [`ApiError::Status`] carrying the status and the body the API server sent.

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not running in a cluster: {0}")]
    NotInCluster(String),
    #[error("connecting to the API server {addr}: {error}")]
    Connect { addr: String, error: String },
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{method} {path}: {error}")]
    Io {
        method: &'static str,
        path: String,
        error: String,
    },
}

impl ApiError {
    /// The HTTP status the API server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct ApiClient {
    client: kube::Client,
    /// The API server's URL, for error messages.
    server: String,
}

impl ApiClient {
    /// A client for the API server `config` describes.
    pub fn from_config(config: kube::Config) -> Result<Self, ApiError> {
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| ApiError::Connect {
            addr: server.clone(),
            error: e.to_string(),
        })?;
        Ok(ApiClient { client, server })
    }

    /// The API server at `server` (an `http://` or `https://` URL, trusting the
    /// system roots), authenticating with the bearer `token` if given.
    pub fn from_url(server: &str, token: Option<String>) -> Result<Self, ApiError> {
        let url = server
            .parse::<http::Uri>()
            .ok()
            .filter(|u| u.scheme().is_some() && u.host().is_some())
            .ok_or_else(|| ApiError::Connect {
                addr: server.into(),
                error: "not an http(s) URL".into(),
            })?;
        let mut config = kube::Config::new(url);
        config.auth_info.token = token.map(Into::into);
        Self::from_config(config)
    }

    /// The in-cluster API server (`KUBERNETES_SERVICE_HOST`/`_PORT`), with the
    /// pod's service-account token and CA. What is missing is named here,
    /// because kube-rs' own error does not say which variable or file it was.
    pub fn in_cluster() -> Result<Self, ApiError> {
        for k in ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"] {
            if std::env::var_os(k).is_none() {
                return Err(ApiError::NotInCluster(format!("{k} is not set")));
            }
        }
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
        if let Err(e) = port.parse::<u16>() {
            return Err(ApiError::NotInCluster(format!(
                "KUBERNETES_SERVICE_PORT {port:?}: {e}"
            )));
        }
        for f in ["token", "ca.crt", "namespace"] {
            let p = format!("{SA_DIR}/{f}");
            if let Err(e) = std::fs::metadata(&p) {
                return Err(ApiError::NotInCluster(format!("{p}: {e}")));
            }
        }
        let config = kube::Config::incluster()
            .map_err(|e| ApiError::NotInCluster(format!("{SA_DIR}: {e}")))?;
        Self::from_config(config)
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, ApiError> {
        let io_err = |e: String| ApiError::Io {
            method,
            path: path.into(),
            error: e,
        };
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("accept", "application/json");
        let (req, payload) = match body {
            Some((ct, b)) => (req.header("content-type", ct), b),
            None => (req, Vec::new()),
        };
        let req = req
            .body(kube::client::Body::from(payload))
            .map_err(|e| io_err(e.to_string()))?;
        let resp = self.client.send(req).await.map_err(|e| match e {
            // No answer at all: say which server could not be reached.
            kube::Error::HyperError(_) | kube::Error::Service(_) => ApiError::Connect {
                addr: self.server.clone(),
                error: chain(&e),
            },
            e => io_err(chain(&e)),
        })?;
        let status = resp.status().as_u16();
        let bytes: Bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| io_err(e.to_string()))?
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                method,
                path: path.into(),
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| io_err(format!("response is not JSON: {e}")))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call("GET", path, None).await
    }

    /// Creates an object (`POST` to the collection).
    pub async fn create(&self, path: &str, obj: &Value) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(obj).unwrap_or_default();
        self.call("POST", path, Some(("application/json", body)))
            .await
    }

    /// Replaces an object (`PUT`); its `metadata.resourceVersion` makes the API
    /// server refuse (409) when someone else wrote in between.
    pub async fn replace(&self, path: &str, obj: &Value) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(obj).unwrap_or_default();
        self.call("PUT", path, Some(("application/json", body)))
            .await
    }

    /// RFC 6902 patch (`application/json-patch+json`).
    pub async fn patch_json(&self, path: &str, patch: &Value) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(patch).unwrap_or_default();
        self.call("PATCH", path, Some(("application/json-patch+json", body)))
            .await
    }
}

/// An error with its sources ("connection refused" sits a few levels down).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_server_url_is_named() {
        let e = ApiClient::from_url("127.0.0.1:6443", None).err().unwrap();
        assert!(e.to_string().contains("127.0.0.1:6443"), "{e}");
    }
}
