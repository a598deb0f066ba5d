//! Test PKI for the tests that bring their own certificates: P-256 roots and
//! intermediates (an Istio `cacerts` folder is made of these), leaves signed by
//! them, and an atomic, world-readable file writer, because sidecars run as
//! UID 1337 and the agent may poll a folder while a test rewrites it.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority: a self-signed root, or an intermediate under another.
pub struct TestCa {
    /// The CA certificate (PEM).
    pub pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, in PEM and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl TestCa {
    /// A CA named `name` (its subject's O and CN); self-signed without `parent`.
    pub fn new(name: &str, parent: Option<&TestCa>) -> TestCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.distinguished_name.push(DnType::OrganizationName, name);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = match parent {
            None => p.self_signed(&key).unwrap(),
            Some(parent) => p.signed_by(&key, &parent.issuer).unwrap(),
        };
        TestCa {
            pem: cert.pem(),
            key: key.serialize_pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf for `cn` with DNS names `dns`, for client or server use.
    pub fn leaf(&self, cn: &str, dns: &[&str], client: bool) -> Leaf {
        let names: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        self.sign(p)
    }

    /// A workload leaf as the mesh CA issues them: URI SAN `spiffe` (e.g.
    /// `spiffe://cluster.local/ns/shop/sa/web`), client and server use; valid
    /// now, or expired since 2021 with `expired`.
    pub fn workload(&self, spiffe: &str, expired: bool) -> Leaf {
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into().unwrap())];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.sign(p)
    }

    /// `p` signed by this CA for a fresh P-256 key.
    fn sign(&self, p: CertificateParams) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// Makes `dir` an Istio `cacerts` folder of this (root) CA signing itself.
    pub fn write_cacerts(&self, dir: &Path) {
        for f in ["ca-cert.pem", "root-cert.pem", "cert-chain.pem"] {
            write_file(dir, f, &self.pem);
        }
        write_file(dir, "ca-key.pem", &self.key);
    }
}

/// Writes `dir/name` atomically (temporary file, then rename), mode 0644.
pub fn write_file(dir: &Path, name: &str, text: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}
