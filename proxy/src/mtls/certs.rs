//! The proxy's workload certificate: an ECDSA P-256 key generated in memory, a
//! CSR sent to the mesh CA (with the pod's credential), and the TLS configs built
//! from the answer. Rotation at half the lifetime (±10% jitter, so a fleet does
//! not renew in lockstep) builds new configs and swaps them in atomically: new
//! connections use the new certificate, existing ones keep theirs and are never
//! dropped. Failures retry with backoff while the old certificate stays in use.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use mesh_api::Identity;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::verify::MeshServerVerifier;

/// Why a certificate could not be obtained or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading the CA credential {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating the key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("mesh CA at {addr}: {source}")]
    Ca {
        addr: String,
        source: mesh_agent::protocol::ProtocolError,
    },
    #[error("the CA's answer is unusable: {0}")]
    Answer(String),
    #[error("TLS config: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where and how to get certificates.
#[derive(Debug, Clone)]
pub struct CertSource {
    pub ca_addr: String,
    pub token_file: PathBuf,
    pub ttl: Duration,
    pub trust_domain: String,
}

/// One certificate generation and everything built from it.
pub struct Creds {
    pub identity: Identity,
    pub not_after: SystemTime,
    pub issued_at: SystemTime,
    /// The leaf's serial number, lowercase hex (as `istioctl proxy-config secret` shows it).
    pub serial: String,
    /// Inbound: TLS 1.3, client certificate required, Istio ALPNs.
    pub server: Arc<ServerConfig>,
    pub client_h1: Arc<ClientConfig>,
    pub client_h2: Arc<ClientConfig>,
    pub client_tcp: Arc<ClientConfig>,
    pub roots: usize,
}

/// The current credentials; `None` until the first certificate arrives.
#[derive(Default)]
pub struct TlsState {
    current: ArcSwapOption<Creds>,
    /// Successful rotations (for the admin page and tests).
    pub rotations: std::sync::atomic::AtomicU64,
}

impl TlsState {
    pub fn current(&self) -> Option<Arc<Creds>> {
        self.current.load_full()
    }
    pub fn install(&self, c: Creds) {
        self.current.store(Some(Arc::new(c)));
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_certs(pems: &[String]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut out = Vec::new();
    for p in pems {
        for block in pem::parse_many(p).map_err(|e| CertError::Answer(e.to_string()))? {
            if block.tag() == "CERTIFICATE" {
                out.push(CertificateDer::from(block.into_contents()));
            }
        }
    }
    Ok(out)
}

/// Builds every TLS config from a signed chain, its key and the roots.
pub fn build_creds(
    chain_pem: &[String],
    key_der: Vec<u8>,
    roots_pem: &[String],
    trust_domain: &str,
) -> Result<Creds, CertError> {
    let chain = pem_certs(chain_pem)?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertError::Answer("empty certificate chain".into()))?;
    let identity =
        super::mesh_identity(leaf, trust_domain).map_err(|e| CertError::Answer(e.to_string()))?;
    let (not_after, not_before, serial) = validity(leaf)?;
    // The CA backdates notBefore for clock skew; the lifetime we plan rotation
    // on starts when we got the certificate.
    let issued_at = SystemTime::now().max(not_before);
    let mut roots = RootCertStore::empty();
    for r in pem_certs(roots_pem)? {
        roots
            .add(r)
            .map_err(|e| CertError::Answer(format!("bad root: {e}")))?;
    }
    let n_roots = roots.len();
    if n_roots == 0 {
        return Err(CertError::Answer("no roots".into()));
    }
    let roots = Arc::new(roots);
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.clone()));
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| CertError::Answer(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier.clone())
        .with_single_cert(chain.clone(), key())?;
    server.alpn_protocols = super::ISTIO_ALPNS.iter().map(|a| a.to_vec()).collect();
    let server_verifier = Arc::new(MeshServerVerifier::new(client_verifier, trust_domain));
    let client = |alpn: &[u8]| -> Result<Arc<ClientConfig>, CertError> {
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier.clone())
            .with_client_auth_cert(chain.clone(), key())?;
        c.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(c))
    };
    Ok(Creds {
        identity,
        not_after,
        issued_at,
        serial,
        server: Arc::new(server),
        client_h1: client(super::ALPN_HTTP1)?,
        client_h2: client(super::ALPN_H2)?,
        client_tcp: client(super::ALPN_TCP)?,
        roots: n_roots,
    })
}

/// notAfter, notBefore and the serial (hex) of a certificate.
fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime, String), CertError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Answer(e.to_string()))?;
    let t = |ts: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64);
    Ok((
        t(cert.validity().not_after.timestamp()),
        t(cert.validity().not_before.timestamp()),
        format!("{:x}", cert.serial),
    ))
}

/// Generates a key, asks the CA, builds the configs.
pub async fn fetch(src: &CertSource) -> Result<Creds, CertError> {
    let token = tokio::fs::read_to_string(&src.token_file)
        .await
        .map_err(|source| CertError::Token {
            path: src.token_file.clone(),
            source,
        })?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    // The CSR carries no SAN: the CA issues the identity our credential proves.
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    let signed = mesh_agent::client::request_certificate(&src.ca_addr, token.trim(), &csr, src.ttl)
        .await
        .map_err(|source| CertError::Ca {
            addr: src.ca_addr.clone(),
            source,
        })?;
    build_creds(
        &signed.chain,
        key.serialize_der(),
        &signed.roots,
        &src.trust_domain,
    )
}

/// When to renew: half the lifetime after issue, ±10% jitter, never in the past.
pub fn renew_at(issued: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let life = not_after.duration_since(issued).unwrap_or_default();
    let half = life.as_secs_f64() * (0.5 + 0.1 * (jitter.clamp(0.0, 1.0) * 2.0 - 1.0));
    issued + Duration::from_secs_f64(half)
}

/// Keeps a valid certificate installed in `state` until `shutdown`.
pub async fn run(
    src: CertSource,
    state: Arc<TlsState>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let wait = match fetch(&src).await {
            Ok(c) => {
                let at = renew_at(c.issued_at, c.not_after, fastrand::f64());
                tracing::info!(identity = %c.identity, roots = c.roots,
                    valid_for_s = c.not_after.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
                    "workload certificate installed");
                state.install(c);
                state
                    .rotations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                backoff = Duration::from_millis(200);
                at.duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .max(Duration::from_millis(500))
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "workload certificate request failed");
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                w
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
