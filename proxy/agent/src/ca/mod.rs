//! The mesh CA (Istio's Citadel role inside `mesh-agent`): a signing CA that is
//! either a self-signed ECDSA P-256 root generated at start (10 years) or an
//! operator-provided one loaded from an Istio `cacerts` folder (`ca-cert.pem`,
//! `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`). It signs workload CSRs for
//! exactly the identity the caller proved ([`auth`]) — the SANs in the request
//! are only checked, never copied — and publishes the root bundle.
//!
//! The CA in force is swappable ([`crate::server::CaService`]): [`reload`] polls
//! the `cacerts` folder and replaces it when the folder changes and checks out
//! (Istio's three-step root rotation: add the new root to `root-cert.pem`,
//! switch the signer, remove the old root); [`publish`] follows it with the root
//! bundle file and, in Kubernetes, the `istio-ca-root-cert` ConfigMaps.

pub mod auth;
pub mod publish;
pub mod reload;

use mesh_api::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the CA could not start or would not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable {what}: {why}")]
    Bad {
        path: PathBuf,
        what: &'static str,
        why: String,
    },
    #[error("generating the CA: {0}")]
    Generate(rcgen::Error),
    #[error("the certificate signing request is not a valid signed PKCS#10 request: {0}")]
    Csr(rcgen::Error),
    #[error("the request asks for SAN {requested:?}, but the caller is {identity}")]
    ForeignSan { requested: String, identity: String },
    #[error("the request asks for a CA certificate; workloads get leaf certificates only")]
    CaRequested,
    #[error("signing: {0}")]
    Sign(rcgen::Error),
    #[error(
        "the CA does not check out: a certificate it signs does not chain to root-cert.pem ({0})"
    )]
    Inconsistent(String),
    #[error("writing the root bundle to {path}: {source}")]
    Publish {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A signed workload certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf first, then the issuing chain (PEM).
    pub chain: Vec<String>,
    pub roots: Vec<String>,
}

/// The signing CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// `cert-chain.pem` (or the self-signed root): what follows the leaf.
    chain: Vec<String>,
    /// Trusted roots; several while a root rotates.
    roots: Vec<String>,
    pub trust_domain: String,
    /// Longest leaf lifetime handed out, whatever the caller asks for.
    pub max_ttl: Duration,
}

/// Splits a PEM bundle into its certificates (PEM each).
pub fn split_pem(text: &str) -> Vec<String> {
    pem::parse_many(text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| pem::encode(&p))
        .collect()
}

impl Ca {
    /// A fresh self-signed root (ECDSA P-256, 10 years), Istio's self-signed CA.
    pub fn self_signed(trust_domain: &str, max_ttl: Duration) -> Result<Ca, CaError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        let pem = cert.pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            chain: vec![pem.clone()],
            roots: vec![pem],
            trust_domain: trust_domain.to_string(),
            max_ttl,
        })
    }

    /// Loads an Istio `cacerts` folder. `root-cert.pem` may hold several roots.
    pub fn from_dir(dir: &Path, trust_domain: &str, max_ttl: Duration) -> Result<Ca, CaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CaError::Read { path, source })
        };
        let bad = |name: &str, what, why: String| CaError::Bad {
            path: dir.join(name),
            what,
            why,
        };
        let cert = read("ca-cert.pem")?;
        let key = read("ca-key.pem")?;
        let key =
            KeyPair::from_pem(&key).map_err(|e| bad("ca-key.pem", "private key", e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key)
            .map_err(|e| bad("ca-cert.pem", "CA certificate", e.to_string()))?;
        let roots = split_pem(&read("root-cert.pem")?);
        if roots.is_empty() {
            return Err(bad(
                "root-cert.pem",
                "certificate",
                "no CERTIFICATE block".into(),
            ));
        }
        let chain = match read("cert-chain.pem") {
            Ok(t) => split_pem(&t),
            Err(_) => split_pem(&cert),
        };
        if chain.is_empty() {
            return Err(bad(
                "cert-chain.pem",
                "certificate",
                "no CERTIFICATE block".into(),
            ));
        }
        Ok(Ca {
            issuer,
            chain,
            roots,
            trust_domain: trust_domain.to_string(),
            max_ttl,
        })
    }

    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    /// Writes the root bundle (Istio's `root-cert.pem` / `istio-ca-root-cert`).
    pub fn publish(&self, path: &Path) -> Result<(), CaError> {
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, self.roots.concat())?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|source| CaError::Publish {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Signs `csr_pem` for `identity` (already authenticated), valid for `ttl`
    /// capped at [`Ca::max_ttl`].
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::Csr)?;
        check_request(&csr.params, identity)?;
        let ttl = ttl.min(self.max_ttl).max(Duration::from_secs(1));
        let mut params = CertificateParams::default();
        // Istio leaves the subject empty; the identity is the URI SAN alone.
        params.distinguished_name = DistinguishedName::new();
        let uri = identity.to_string();
        params.subject_alt_names =
            vec![SanType::URI(uri.clone().try_into().map_err(CaError::Sign)?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        // A little backdating absorbs clock skew between nodes.
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::DAY);
        params.serial_number = Some(random_serial());
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(CaError::Sign)?;
        let mut chain = vec![leaf.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok(Issued {
            chain,
            roots: self.roots.clone(),
        })
    }
}

/// The agent's own serving certificate for 15012 (like istiod's): DNS SANs,
/// server usage only, the same chain as workload certificates.
#[derive(Clone)]
pub struct ServerCert {
    /// Leaf first, then the issuing chain (PEM).
    pub chain: Vec<String>,
    /// PKCS#8 DER of the key generated for it.
    pub key_der: Vec<u8>,
    pub not_after: std::time::SystemTime,
}

impl Ca {
    /// Issues the agent's serving certificate for `dns_names`, valid for `ttl`.
    pub fn issue_server(&self, dns_names: &[String], ttl: Duration) -> Result<ServerCert, CaError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = dns_names
            .iter()
            .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
            .collect::<Result<_, rcgen::Error>>()
            .map_err(CaError::Sign)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        let ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::DAY);
        params.not_after = now + ttl;
        params.serial_number = Some(random_serial());
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Sign)?;
        let mut chain = vec![leaf.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok(ServerCert {
            chain,
            key_der: key.serialize_der(),
            not_after: std::time::SystemTime::now() + ttl.unsigned_abs(),
        })
    }
}

/// What the caller may ask for: no SAN, or exactly its own identity; never a CA.
pub fn check_request(req: &CertificateParams, identity: &Identity) -> Result<(), CaError> {
    let own = identity.to_string();
    for san in &req.subject_alt_names {
        let requested = match san {
            SanType::URI(u) => u.as_str().to_string(),
            SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
            SanType::Rfc822Name(e) => format!("email:{}", e.as_str()),
            SanType::IpAddress(ip) => format!("IP:{ip}"),
            other => format!("{other:?}"),
        };
        if requested != own {
            return Err(CaError::ForeignSan {
                requested,
                identity: own,
            });
        }
    }
    if matches!(req.is_ca, IsCa::Ca(_)) {
        return Err(CaError::CaRequested);
    }
    Ok(())
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    getrandom(&mut b);
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

fn getrandom(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    // The system RNG failing is not recoverable for a CA.
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("system random number generator");
}

#[cfg(test)]
mod tests;
