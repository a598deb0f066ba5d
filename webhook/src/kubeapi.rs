//! The few Kubernetes API calls self-managed mode needs (GET, POST, PUT, JSON PATCH), over
//! hyper with rustls and the pod's service-account token. One connection per call:
//! these calls are rare.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;

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
    host: String,
    port: u16,
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ApiClient {
    /// Plain HTTP, for tests against a fake API server on loopback.
    pub fn plain(host: &str, port: u16, token: Option<String>) -> Self {
        ApiClient {
            host: host.into(),
            port,
            token,
            tls: None,
        }
    }

    /// HTTPS trusting `ca_pem`.
    pub fn https(
        host: &str,
        port: u16,
        ca_pem: &[u8],
        token: Option<String>,
    ) -> Result<Self, ApiError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            let c = c.map_err(|e| ApiError::NotInCluster(format!("bad CA PEM: {e}")))?;
            roots
                .add(c)
                .map_err(|e| ApiError::NotInCluster(format!("bad CA cert: {e}")))?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::NotInCluster(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(ApiClient {
            host: host.into(),
            port,
            token,
            tls: Some(Arc::new(cfg)),
        })
    }

    /// The in-cluster API server, service-account token and CA.
    pub fn in_cluster() -> Result<Self, ApiError> {
        let env = |k: &str| {
            std::env::var(k).map_err(|_| ApiError::NotInCluster(format!("{k} is not set")))
        };
        let host = env("KUBERNETES_SERVICE_HOST")?;
        let port = env("KUBERNETES_SERVICE_PORT")?
            .parse()
            .map_err(|e| ApiError::NotInCluster(format!("KUBERNETES_SERVICE_PORT: {e}")))?;
        let read = |f: &str| {
            std::fs::read(Path::new(SA_DIR).join(f))
                .map_err(|e| ApiError::NotInCluster(format!("{SA_DIR}/{f}: {e}")))
        };
        let token = String::from_utf8_lossy(&read("token")?).trim().to_string();
        Self::https(&host, port, &read("ca.crt")?, Some(token))
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, ApiError> {
        let addr = format!("{}:{}", self.host, self.port);
        let io_err = |e: String| ApiError::Io {
            method,
            path: path.into(),
            error: e,
        };
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| ApiError::Connect {
                addr: addr.clone(),
                error: e.to_string(),
            })?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let (req, payload) = match body {
            Some((ct, b)) => (req.header("content-type", ct), b),
            None => (req, Vec::new()),
        };
        let req = req
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| io_err(e.to_string()))?;
        let resp = match &self.tls {
            None => send(TokioIo::new(tcp), req).await,
            Some(cfg) => {
                let name =
                    ServerName::try_from(self.host.clone()).map_err(|e| io_err(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ApiError::Connect {
                        addr: addr.clone(),
                        error: e.to_string(),
                    })?;
                send(TokioIo::new(tls), req).await
            }
        }
        .map_err(io_err)?;
        let (status, bytes) = resp;
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

async fn send<IO>(io: TokioIo<IO>, req: hyper::Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}
