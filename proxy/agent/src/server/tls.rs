//! TLS on 15012, like istiod: when the CA is on, the agent serves its sync/CSR
//! port with TLS 1.3 and a certificate it issues itself from the mesh CA (DNS
//! SANs `istiod.istio-system.svc`, `mesh-agent.istio-system.svc` and
//! `--server-san`), so a workload token never travels in clear. The certificate
//! is re-issued at half its lifetime and at once whenever the CA in force
//! changes (a root rotation must reach the serving certificate too); each new
//! connection takes the current one, open ones keep theirs. A caller may
//! present its workload certificate as TLS client ([`super::peer`]).

use super::shared::CaService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The serving certificate's default DNS names (Istio's discovery address names).
pub const DEFAULT_SANS: [&str; 2] = [
    mesh_api::identity::ISTIOD_SERVER_NAME,
    "mesh-agent.istio-system.svc",
];

/// The current server config of the TLS listener.
pub struct ServerTls {
    config: RwLock<Arc<ServerConfig>>,
    sans: Vec<String>,
    ttl: Duration,
    /// Serving certificates issued so far (for tests and logs).
    pub issued: std::sync::atomic::AtomicU64,
}

fn build(
    ca: &crate::ca::Ca,
    sans: &[String],
    ttl: Duration,
) -> Result<(Arc<ServerConfig>, SystemTime), String> {
    let cert = ca.issue_server(sans, ttl).map_err(|e| e.to_string())?;
    let chain: Vec<CertificateDer<'static>> = cert
        .chain
        .iter()
        .flat_map(|p| pem::parse_many(p).unwrap_or_default())
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der));
    let cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            // Asked, not required; judged per subscription (see `peer`).
            .with_client_cert_verifier(Arc::new(super::peer::OfferClientCert::default()))
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
    Ok((Arc::new(cfg), cert.not_after))
}

impl ServerTls {
    /// Issues the first serving certificate from the CA in force.
    pub fn new(
        ca: &CaService,
        extra_sans: &[String],
        ttl: Duration,
    ) -> Result<Arc<ServerTls>, String> {
        let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
        for s in extra_sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        let (cfg, _) = build(&ca.current(), &sans, ttl)?;
        Ok(Arc::new(ServerTls {
            config: RwLock::new(cfg),
            sans,
            ttl,
            issued: 1.into(),
        }))
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn sans(&self) -> &[String] {
        &self.sans
    }

    fn reissue(&self, ca: &crate::ca::Ca) -> Result<SystemTime, String> {
        let (cfg, not_after) = build(ca, &self.sans, self.ttl)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        self.issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(not_after)
    }

    /// Re-issues at half the lifetime and when the CA changes, until `shutdown`.
    pub async fn renew(self: Arc<Self>, ca: Arc<CaService>, shutdown: CancellationToken) {
        let mut cas = ca.subscribe();
        cas.borrow_and_update();
        let mut wait = self.ttl / 2;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = cas.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
            let current = cas.borrow_and_update().clone();
            wait = match self.reissue(&current) {
                Ok(not_after) => {
                    tracing::info!(sans = ?self.sans, "serving certificate issued");
                    let left = not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    (left / 2).max(Duration::from_secs(1))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "serving certificate not renewed; retrying");
                    Duration::from_secs(5)
                }
            };
        }
    }
}
