//! Follows the `cacerts` folder (`--ca-dir`, a mounted Secret in Kubernetes whose
//! files the kubelet swaps atomically, or files an operator edits one by one).
//! Every period the four files are read; when their bytes differ from the last
//! attempt the folder is loaded and checked ([`check`]: a probe certificate the
//! candidate signs must chain to its `root-cert.pem`). A folder that fails —
//! half-written, key not matching the certificate, signer not under any root — is
//! refused with the reason and the CA in force stays; the next change is tried
//! again. Polling (not inotify) because Secret volumes change through symlink
//! swaps that inotify watches on the files miss.

use super::{Ca, CaError};
use crate::server::CaService;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The files of an Istio `cacerts` folder.
pub const FILES: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "root-cert.pem",
    "cert-chain.pem",
];

/// The folder's current bytes (missing files read as empty).
pub fn fingerprint(dir: &Path) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap_or_default())
        .collect()
}

fn der(pems: &[String]) -> Vec<CertificateDer<'static>> {
    pems.iter()
        .flat_map(|p| pem::parse_many(p).unwrap_or_default())
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect()
}

/// Proves `ca` can work: a certificate it issues verifies against its roots
/// (which also proves ca-key.pem belongs to ca-cert.pem).
pub fn check(ca: &Ca) -> Result<(), CaError> {
    let probe = ca.issue_server(
        &["probe.mesh-agent.invalid".into()],
        Duration::from_secs(60),
    )?;
    let chain = der(&probe.chain);
    let mut roots = rustls::RootCertStore::empty();
    for r in der(ca.roots()) {
        roots
            .add(r)
            .map_err(|e| CaError::Inconsistent(format!("root-cert.pem: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| CaError::Inconsistent(e.to_string()))?;
    let name = ServerName::try_from("probe.mesh-agent.invalid")
        .map_err(|e| CaError::Inconsistent(e.to_string()))?;
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .map_err(|e| CaError::Inconsistent(e.to_string()))?;
    Ok(())
}

/// Loads and checks the folder.
pub fn load(dir: &Path, trust_domain: &str, max_ttl: Duration) -> Result<Ca, CaError> {
    let ca = Ca::from_dir(dir, trust_domain, max_ttl)?;
    check(&ca)?;
    Ok(ca)
}

/// Polls `dir` every `period` and swaps a changed, valid CA into `service`.
pub async fn watch(
    dir: PathBuf,
    service: Arc<CaService>,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut last = fingerprint(&dir);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let now = fingerprint(&dir);
        if now == last {
            continue;
        }
        last = now;
        let current = service.current();
        match load(&dir, &current.trust_domain, current.max_ttl) {
            Ok(ca) => {
                tracing::info!(dir = %dir.display(), roots = ca.roots().len(),
                    "cacerts changed: the new CA is in force");
                service.replace(ca);
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "cacerts changed but is not usable; keeping the CA in force");
                service
                    .reloads_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}
