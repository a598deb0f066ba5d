//! A gateway server's TLS: Istio's `credentialName` lookup (Secrets of the
//! gateway pod's namespace only), the checks that the material can be served,
//! and the file-path variant. Errors name the Gateway, server, Secret and what
//! is wrong, and never carry key bytes.

use crate::compile::gwinputs::{SecretKeys, Secrets};
use mesh_api::networking::ServerTlsSettings;
use mesh_api::syncapi::{GatewayTls, TlsCredential, TlsFiles};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a credential cannot be served (the text after `<gateway> servers[i]: `).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("secret {0} not found in the gateway's namespace")]
    Missing(String),
    #[error("secret {secret} has no {key:?}")]
    NoKey { secret: String, key: &'static str },
    #[error("secret {secret} key {key:?} is not PEM certificates: {why}")]
    BadCert {
        secret: String,
        key: &'static str,
        why: String,
    },
    #[error(
        "secret {secret} key {key:?} is not a usable PEM private key (RSA, ECDSA or Ed25519; PKCS#8, PKCS#1 or SEC1)"
    )]
    BadKey { secret: String, key: &'static str },
    #[error("secret {secret}: the private key does not match the certificate: {why}")]
    Mismatch { secret: String, why: String },
    #[error(
        "mode {mode} needs a client CA: secret {secret} has no \"ca.crt\" or \"cacert\" and there is no secret {secret}-cacert"
    )]
    NoCa { mode: String, secret: String },
}

/// Istio's default mode when `tls` is set without one.
pub fn mode_of(t: &ServerTlsSettings) -> String {
    t.mode
        .as_deref()
        .map(str::to_ascii_uppercase)
        .unwrap_or_else(|| "SIMPLE".into())
}

/// Resolves one server's TLS. `server` is `ns/gateway servers[i]` (for errors);
/// Secrets come from `pod_ns` only, whatever namespace the Gateway is in.
pub fn server_tls(
    secrets: &Secrets,
    pod_ns: &str,
    server: &str,
    t: &ServerTlsSettings,
) -> GatewayTls {
    let mode = mode_of(t);
    let mut tls = GatewayTls {
        mode: mode.clone(),
        subject_alt_names: t.subject_alt_names.clone(),
        min_protocol_version: t.min_protocol_version.clone(),
        max_protocol_version: t.max_protocol_version.clone(),
        cipher_suites: t.cipher_suites.clone(),
        ..Default::default()
    };
    if !matches!(mode.as_str(), "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL") {
        return tls;
    }
    let name = t
        .credential_names
        .first()
        .or(t.credential_name.as_ref())
        .filter(|n| !n.is_empty());
    match name {
        Some(name) => match credential(secrets, pod_ns, name, &mode) {
            Ok(c) => tls.credential = Some(c),
            Err(e) => tls.error = Some(format!("{server}: {e}")),
        },
        None => {
            if let (Some(c), Some(k)) = (&t.server_certificate, &t.private_key) {
                tls.files = Some(TlsFiles {
                    server_certificate: c.clone(),
                    private_key: k.clone(),
                    ca_certificates: t.ca_certificates.clone(),
                });
            }
        }
    }
    tls
}

fn get<'s>(s: &'s SecretKeys, keys: &[&'static str]) -> Option<(&'static str, &'s [u8])> {
    keys.iter()
        .find_map(|k| s.0.get(*k).map(|v| (*k, v.as_slice())))
}

/// Reads and checks the credential `name` of namespace `ns`.
pub fn credential(
    secrets: &Secrets,
    ns: &str,
    name: &str,
    mode: &str,
) -> Result<TlsCredential, CredentialError> {
    let id = format!("{ns}/{name}");
    let s = secrets
        .get(&(ns.to_string(), name.to_string()))
        .ok_or_else(|| CredentialError::Missing(id.clone()))?;
    // `cert`/`key` (Istio's generic form) only when `tls.crt` is absent.
    let (ck, kk) = if s.0.contains_key("tls.crt") || !s.0.contains_key("cert") {
        ("tls.crt", "tls.key")
    } else {
        ("cert", "key")
    };
    let (_, cert) = get(s, &[ck]).ok_or(CredentialError::NoKey {
        secret: id.clone(),
        key: ck,
    })?;
    let (_, key) = get(s, &[kk]).ok_or(CredentialError::NoKey {
        secret: id.clone(),
        key: kk,
    })?;
    check_pair(&id, (ck, cert), (kk, key))?;
    let mut cred = TlsCredential {
        source: id.clone(),
        cert_chain: String::from_utf8_lossy(cert).into_owned(),
        private_key: String::from_utf8_lossy(key).into_owned(),
        ..Default::default()
    };
    if mode == "MUTUAL" || mode == "OPTIONAL_MUTUAL" {
        // Istio: a `<name>-cacert` Secret wins over the CA inside the Secret.
        let ca_name = format!("{name}-cacert");
        let ca_secret = secrets.get(&(ns.to_string(), ca_name.clone()));
        let (from, ca_src) = match ca_secret {
            Some(c) if get(c, &["ca.crt", "cacert"]).is_some() => (format!("{ns}/{ca_name}"), c),
            _ => (id.clone(), s),
        };
        let (ca_key, ca) = get(ca_src, &["ca.crt", "cacert"]).ok_or(CredentialError::NoCa {
            mode: mode.to_string(),
            secret: id.clone(),
        })?;
        certificates(ca).map_err(|why| CredentialError::BadCert {
            secret: from.clone(),
            key: ca_key,
            why,
        })?;
        if from != id {
            cred.source = format!("{id}, {from}");
        }
        cred.ca_certificates = Some(String::from_utf8_lossy(ca).into_owned());
        cred.ca_crl = get(ca_src, &["ca.crl"])
            .or_else(|| get(s, &["ca.crl"]))
            .map(|(_, c)| String::from_utf8_lossy(c).into_owned());
    }
    Ok(cred)
}

/// Checks that `cert` (key `ck` of Secret `id`) is PEM certificates, `key` a
/// usable private key, and that they match: what a gateway can serve. Shared by
/// `credentialName` lookup and the Gateway API listener's certificateRefs.
pub fn check_pair(
    id: &str,
    (ck, cert): (&'static str, &[u8]),
    (kk, key): (&'static str, &[u8]),
) -> Result<(), CredentialError> {
    let id = id.to_string();
    let chain = certificates(cert).map_err(|why| CredentialError::BadCert {
        secret: id.clone(),
        key: ck,
        why,
    })?;
    let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|_| CredentialError::BadKey {
        secret: id.clone(),
        key: kk,
    })?;
    let bad_key = || CredentialError::BadKey {
        secret: id.clone(),
        key: kk,
    };
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| bad_key())?;
    match rustls::sign::CertifiedKey::new(chain, signing).keys_match() {
        // A key type whose public half rustls cannot derive: nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(CredentialError::Mismatch {
                secret: id.clone(),
                why: e.to_string(),
            })
        }
    }
    Ok(())
}

/// The certificates of a PEM bundle, each checked to be a parseable X.509.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let c = c.map_err(|e| format!("PEM block {i}: {e}"))?;
        x509_parser::parse_x509_certificate(&c)
            .map_err(|e| format!("certificate {i} does not parse: {e}"))?;
        out.push(c);
    }
    if out.is_empty() {
        return Err("no \"CERTIFICATE\" PEM block".into());
    }
    Ok(out)
}
