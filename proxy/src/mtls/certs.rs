//! The proxy's workload certificate: an ECDSA P-256 key generated in memory, a
//! CSR sent to the mesh CA (with the pod's credential), and the TLS configs built
//! from the answer. Rotation at half the lifetime (±10% jitter, so a fleet does
//! not renew in lockstep) builds new configs and swaps them in atomically: new
//! connections use the new certificate, existing ones keep theirs and are never
//! dropped. Failures retry with backoff while the old certificate stays in use.
//!
//! TLS or plaintext to the agent ([`transport`]): TLS 1.3 whenever a root bundle
//! is there — `--ca-root-file`, or pilot-agent's default path
//! `/var/run/secrets/istio/root-cert.pem` (the mounted `istio-ca-root-cert`) if
//! it exists — verified against that bundle and `--ca-server-name`
//! (`istiod.istio-system.svc`). Without one the config stream is plaintext (an
//! agent without CA), and a CA credential without a bundle is a config error:
//! the token is never sent in clear.
//!
//! Roots during a rotation: the mesh peers are trusted against the union of the
//! roots the CA sent with the last certificate and the roots in the bundle file,
//! which is re-read every second. Adding a root reaches the proxy through
//! whichever comes first (no wait for the leaf renewal); a root is dropped only
//! when both agree it is gone. Either way the leaf and key stay; only the
//! verifiers are rebuilt and swapped in.

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
        source: mesh_api::syncframe::ProtocolError,
    },
    #[error("the CA's answer is unusable: {0}")]
    Answer(String),
    #[error("TLS config: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why the flags give no usable way to the agent ([`transport`]).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the CA credential {token} is set but the CA root bundle {roots} is missing: mount the istio-ca-root-cert ConfigMap there or give --ca-root-file")]
    NoRoots { token: String, roots: String },
    #[error("--ca-root-file {path}: {why}")]
    BadRoots { path: String, why: String },
}

/// Decides how to reach the agent (see the module doc). `token` is the CA
/// credential in use, if any.
pub fn transport(
    root_file: Option<&std::path::Path>,
    server_name: &str,
    token: Option<&std::path::Path>,
) -> Result<mesh_api::syncclient::Transport, TransportError> {
    let default = std::path::Path::new(mesh_api::identity::CA_ROOT_PATH);
    let root_file = match root_file {
        Some(f) => f,
        None if default.exists() => default,
        None => {
            return match token {
                Some(t) => Err(TransportError::NoRoots {
                    token: t.display().to_string(),
                    roots: default.display().to_string(),
                }),
                None => Ok(mesh_api::syncclient::Transport::Plaintext),
            }
        }
    };
    let bad = |why: String| TransportError::BadRoots {
        path: root_file.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(root_file).map_err(|e| bad(e.to_string()))?;
    if pem_certs(&[text])
        .map_err(|e| bad(e.to_string()))?
        .is_empty()
    {
        return Err(bad("no CERTIFICATE in it".into()));
    }
    if rustls::pki_types::ServerName::try_from(server_name.to_string()).is_err() {
        return Err(bad(format!(
            "--ca-server-name {server_name:?} is not a DNS name"
        )));
    }
    Ok(mesh_api::syncclient::Transport::Tls {
        root_file: root_file.to_path_buf(),
        server_name: server_name.to_string(),
    })
}

/// Where and how to get certificates.
#[derive(Debug, Clone)]
pub struct CertSource {
    /// TLS to the CA, with the bundle file also followed for mesh roots.
    pub transport: mesh_api::syncclient::Transport,
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
    /// How many roots peers are verified against.
    pub roots: usize,
    /// SHA-256 (hex) of each trusted root, sorted.
    pub root_sha256: Vec<String>,
    /// SHA-256 (hex) of each certificate after the leaf (the issuing chain).
    pub chain_sha256: Vec<String>,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    /// The roots the CA sent with this certificate.
    ca_roots: Vec<CertificateDer<'static>>,
    trusted: Vec<CertificateDer<'static>>,
}

fn sha256_hex(der: &[u8]) -> String {
    super::cert_hash(der)
}

/// The current credentials; `None` until the first certificate arrives.
#[derive(Default)]
pub struct TlsState {
    current: ArcSwapOption<Creds>,
    /// Successful rotations (for the admin page and tests).
    pub rotations: std::sync::atomic::AtomicU64,
    /// Root bundle changes applied without a new certificate.
    pub root_updates: std::sync::atomic::AtomicU64,
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
    let ca_roots = pem_certs(roots_pem)?;
    build(
        pem_certs(chain_pem)?,
        key_der,
        ca_roots.clone(),
        ca_roots,
        trust_domain,
        None,
    )
}

impl Creds {
    /// The same certificate and key, peers verified against `ca_roots` (from
    /// the CA) ∪ `extra` (the bundle file).
    pub fn with_roots(
        &self,
        extra: &[CertificateDer<'static>],
        trust_domain: &str,
    ) -> Result<Creds, CertError> {
        let mut trusted = self.ca_roots.clone();
        trusted.extend(extra.iter().cloned());
        build(
            self.chain.clone(),
            self.key_der.clone(),
            self.ca_roots.clone(),
            trusted,
            trust_domain,
            Some(self.issued_at),
        )
    }

    /// This certificate and key as the agent client presents them on 15012.
    pub fn client_cert(&self) -> mesh_api::syncclient::ClientCert {
        mesh_api::syncclient::ClientCert {
            chain: self.chain.clone(),
            key_der: self.key_der.clone(),
        }
    }

    /// Whether peers are verified against exactly `ca_roots ∪ extra`.
    pub fn trusts_exactly(&self, extra: &[CertificateDer<'static>]) -> bool {
        let mut want: Vec<&[u8]> = self
            .ca_roots
            .iter()
            .chain(extra)
            .map(|c| c.as_ref())
            .collect();
        want.sort();
        want.dedup();
        let mut have: Vec<&[u8]> = self.trusted.iter().map(|c| c.as_ref()).collect();
        have.sort();
        want == have
    }
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    ca_roots: Vec<CertificateDer<'static>>,
    mut trusted: Vec<CertificateDer<'static>>,
    trust_domain: &str,
    issued_at: Option<SystemTime>,
) -> Result<Creds, CertError> {
    trusted.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    trusted.dedup();
    let leaf = chain
        .first()
        .ok_or_else(|| CertError::Answer("empty certificate chain".into()))?;
    let identity =
        super::mesh_identity(leaf, trust_domain).map_err(|e| CertError::Answer(e.to_string()))?;
    let (not_after, not_before, serial) = validity(leaf)?;
    // The CA backdates notBefore for clock skew; the lifetime we plan rotation
    // on starts when we got the certificate.
    let issued_at = issued_at.unwrap_or_else(|| SystemTime::now().max(not_before));
    let mut roots = RootCertStore::empty();
    for r in &trusted {
        roots
            .add(r.clone())
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
    // Mesh connections hand their keys to our record layer (`session`).
    server.enable_secret_extraction = true;
    let server_verifier = Arc::new(MeshServerVerifier::new(
        client_verifier,
        trust_domain,
        provider().signature_verification_algorithms,
    ));
    let client = |alpn: &[u8]| -> Result<Arc<ClientConfig>, CertError> {
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier.clone())
            .with_client_auth_cert(chain.clone(), key())?;
        c.alpn_protocols = vec![alpn.to_vec()];
        c.enable_secret_extraction = true;
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
        root_sha256: trusted.iter().map(|r| sha256_hex(r)).collect(),
        chain_sha256: chain[1..].iter().map(|c| sha256_hex(c)).collect(),
        chain,
        key_der,
        ca_roots,
        trusted,
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

/// The roots in the bundle file of a TLS transport (None: no file, or unreadable).
fn file_roots(src: &CertSource) -> Option<Vec<CertificateDer<'static>>> {
    let mesh_api::syncclient::Transport::Tls { root_file, .. } = &src.transport else {
        return Some(Vec::new());
    };
    let text = std::fs::read_to_string(root_file).ok()?;
    pem_certs(&[text]).ok().filter(|r| !r.is_empty())
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
    let signed = mesh_api::syncclient::request_certificate(
        &src.ca_addr,
        &src.transport,
        token.trim(),
        &csr,
        src.ttl,
    )
    .await
    .map_err(|source| CertError::Ca {
        addr: src.ca_addr.clone(),
        source,
    })?;
    let creds = build_creds(
        &signed.chain,
        key.serialize_der(),
        &signed.roots,
        &src.trust_domain,
    )?;
    match file_roots(src) {
        Some(extra) if !extra.is_empty() => creds.with_roots(&extra, &src.trust_domain),
        _ => Ok(creds),
    }
}

/// Follows the bundle file: swaps in verifiers for a changed root set.
fn refresh_roots(src: &CertSource, state: &TlsState) {
    let (Some(current), Some(extra)) = (state.current(), file_roots(src)) else {
        return;
    };
    if current.trusts_exactly(&extra) {
        return;
    }
    match current.with_roots(&extra, &src.trust_domain) {
        Ok(c) => {
            tracing::info!(
                roots = c.roots,
                "mesh root bundle changed; peers verified against it"
            );
            state.install(c);
            state
                .root_updates
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "root bundle not usable; keeping the roots in force"),
    }
}

/// When to renew: half the lifetime after issue, ±10% jitter, never in the past.
pub fn renew_at(issued: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let life = not_after.duration_since(issued).unwrap_or_default();
    let half = life.as_secs_f64() * (0.5 + 0.1 * (jitter.clamp(0.0, 1.0) * 2.0 - 1.0));
    issued + Duration::from_secs_f64(half)
}

/// Keeps a valid certificate installed in `state` until `shutdown`, and the
/// trusted roots following the bundle file (checked every second).
pub async fn run(
    src: CertSource,
    state: Arc<TlsState>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    let mut renew = tokio::time::Instant::now();
    let mut roots_tick = tokio::time::interval(Duration::from_secs(1));
    roots_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = roots_tick.tick() => {
                refresh_roots(&src, &state);
                continue;
            }
            _ = tokio::time::sleep_until(renew) => {}
        }
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
        renew = tokio::time::Instant::now() + wait;
    }
}
