//! The binary's one typed Config (flags or env), validated before any port is
//! bound: the cert, key and mesh config must load, or startup fails naming the file
//! and what is wrong with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_api::meshconfig::{MeshConfig, MeshConfigError};
use rustls::sign::CertifiedKey;

use crate::limits::Limits;
pub use crate::limits::MAX_BODY_BYTES;
use crate::tls::{load_certified_key, TlsError};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on (HTTPS).
    #[arg(long, env = "MESH_WEBHOOK_LISTEN", default_value = "0.0.0.0:15017")]
    pub listen: SocketAddr,
    /// PEM serving certificate chain (reloaded when it changes).
    #[arg(
        long,
        env = "MESH_WEBHOOK_TLS_CERT",
        required_unless_present = "self_managed_service"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the serving certificate.
    #[arg(
        long,
        env = "MESH_WEBHOOK_TLS_KEY",
        required_unless_present = "self_managed_service"
    )]
    pub tls_key: Option<PathBuf>,
    /// Self-managed mode: make our own CA and a cert for this Service, and keep the
    /// caBundle of `--webhook-config` in step through the Kubernetes API.
    #[arg(long, env = "MESH_WEBHOOK_SELF_MANAGED_SERVICE", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub self_managed_service: Option<String>,
    /// Namespace of that Service.
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    pub self_managed_namespace: String,
    /// MutatingWebhookConfiguration whose caBundle self-managed mode maintains.
    #[arg(long, default_value = "mesh-sidecar-injector")]
    pub webhook_config: String,
    /// ValidatingWebhookConfiguration whose caBundle self-managed mode maintains
    /// (empty: none).
    #[arg(long, default_value = "mesh-validator")]
    pub validating_webhook_config: String,
    /// Secret (in the Service's namespace) holding the CA and serving cert all
    /// replicas share in self-managed mode.
    #[arg(long, default_value = "mesh-webhook-certs")]
    pub certs_secret: String,
    /// Mesh config file (the ConfigMap content); defaults apply without it.
    #[arg(long, env = "MESH_WEBHOOK_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// How often the cert, key and mesh config files are checked for changes.
    #[arg(long, default_value = "1000")]
    pub reload_interval_ms: u64,
    /// Time a client has to finish the TLS handshake and send request headers.
    #[arg(long, default_value = "5000")]
    pub header_timeout_ms: u64,
    /// Time a client has to send the request body.
    #[arg(long, default_value = "10000")]
    pub body_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {what} file {path}: {error}")]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("TLS cert {cert} / key {key}: {error}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        error: TlsError,
    },
    #[error("mesh config {path}: {error}")]
    Mesh { path: PathBuf, error: MeshLoadError },
    #[error("self-managed certificates: {0}")]
    SelfManaged(#[from] crate::selfca::SelfCaError),
    #[error("give --tls-cert and --tls-key, or --self-managed-service")]
    NoCert,
    #[error("{field} must be greater than 0 (got {value})")]
    Zero { field: &'static str, value: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum MeshLoadError {
    #[error("not valid mesh config YAML: {0}")]
    Yaml(String),
    #[error(transparent)]
    Invalid(#[from] MeshConfigError),
    #[error(transparent)]
    File(#[from] mesh_agent::meshfile::MeshFileError),
}

/// Parses and validates mesh config YAML exactly as mesh-agent does
/// (`mesh_agent::meshfile`): Istio MeshConfig fields the mesh does not use are
/// accepted and logged, known fields are typed and checked.
pub fn parse_mesh_config(text: &str) -> Result<MeshConfig, MeshLoadError> {
    let m = mesh_agent::meshfile::parse(text)?;
    if !m.ignored.is_empty() {
        tracing::info!(fields = ?m.ignored, "mesh config fields not used by the mesh");
    }
    Ok(m.mesh)
}

/// A validated Config with its files loaded.
pub struct Loaded {
    pub cert: CertifiedKey,
    pub mesh: MeshConfig,
    /// Set in self-managed mode: the CA whose bundle we publish.
    pub self_managed: Option<crate::selfca::SelfManaged>,
}

impl Config {
    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: MAX_BODY_BYTES,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
        }
    }

    pub fn load(&self) -> Result<Loaded, ConfigError> {
        for (field, value) in [
            ("--reload-interval-ms", self.reload_interval_ms),
            ("--header-timeout-ms", self.header_timeout_ms),
            ("--body-timeout-ms", self.body_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field, value });
            }
        }
        let read = |what, path: &PathBuf| {
            std::fs::read(path).map_err(|error| ConfigError::Read {
                what,
                path: path.clone(),
                error,
            })
        };
        let (cert, self_managed) = match (&self.self_managed_service, &self.tls_cert, &self.tls_key)
        {
            (Some(svc), _, _) => {
                let sm = crate::selfca::SelfManaged::generate(svc, &self.self_managed_namespace)?;
                let key = sm
                    .certified_key()
                    .map_err(crate::selfca::SelfCaError::from)?;
                (key, Some(sm))
            }
            (None, Some(cert), Some(key)) => {
                let cert_pem = read("TLS certificate", cert)?;
                let key_pem = read("TLS key", key)?;
                let ck =
                    load_certified_key(&cert_pem, &key_pem).map_err(|error| ConfigError::Tls {
                        cert: cert.clone(),
                        key: key.clone(),
                        error,
                    })?;
                (ck, None)
            }
            _ => return Err(ConfigError::NoCert),
        };
        let mesh = match &self.mesh_config {
            None => MeshConfig::default(),
            Some(p) => {
                let text = read("mesh config", p)?;
                parse_mesh_config(&String::from_utf8_lossy(&text)).map_err(|error| {
                    ConfigError::Mesh {
                        path: p.clone(),
                        error,
                    }
                })?
            }
        };
        Ok(Loaded {
            cert,
            mesh,
            self_managed,
        })
    }
}
