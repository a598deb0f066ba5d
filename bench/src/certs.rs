//! Certificates for the mTLS variants: one P-256 root, written as an Istio
//! `cacerts` folder for mesh-agent's CA (which then issues mesh-proxy's workload
//! certificates), and leaf certificates signed by the same root with the same
//! SPIFFE identities for Envoy — so both proxies handshake with the same key
//! type, chain length and verification work. The gateway variants get a
//! server certificate for their HTTPS port from a root of the same kind.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Files of one Envoy sidecar's TLS identity.
#[derive(Debug, Clone)]
pub struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub root: PathBuf,
}

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    pub fn new() -> anyhow::Result<Ca> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "mesh-bench");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            pem: cert.pem(),
            params,
            key,
        })
    }

    /// An Istio `cacerts` folder (the root signs directly).
    pub fn write_cacerts(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, text) in [
            ("ca-cert.pem", self.pem.as_str()),
            ("root-cert.pem", self.pem.as_str()),
            ("cert-chain.pem", self.pem.as_str()),
            ("ca-key.pem", &self.key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
        }
        Ok(())
    }

    /// A workload leaf for `spiffe://cluster.local/ns/default/sa/<sa>`, readable
    /// by the sidecar's UID.
    pub fn leaf(&self, dir: &Path, sa: &str) -> anyhow::Result<LeafFiles> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://cluster.local/ns/default/sa/{sa}").try_into()?,
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(dir, sa, &params)
    }

    /// A server certificate for the DNS name `host` (a gateway's HTTPS port),
    /// readable by the proxy's UID; `root` is what clients trust.
    pub fn server_leaf(&self, dir: &Path, host: &str) -> anyhow::Result<LeafFiles> {
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(dir, host, &params)
    }

    /// Signs `params` with a fresh P-256 key and writes `<stem>-cert.pem`,
    /// `<stem>-key.pem` and the root into `dir`.
    fn sign(
        &self,
        dir: &Path,
        stem: &str,
        params: &CertificateParams,
    ) -> anyhow::Result<LeafFiles> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        let files = LeafFiles {
            cert: dir.join(format!("{stem}-cert.pem")),
            key: dir.join(format!("{stem}-key.pem")),
            root: dir.join("root-cert.pem"),
        };
        write_readable(&files.cert, cert.pem().as_bytes())?;
        write_readable(&files.key, key.serialize_pem().as_bytes())?;
        write_readable(&files.root, self.pem.as_bytes())?;
        Ok(files)
    }
}

/// Writes `data` to `path`, readable by every UID (the sidecars run as 1337).
pub fn write_readable(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).with_context(|| path.display().to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}
