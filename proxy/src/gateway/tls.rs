//! Server-side TLS of a gateway server, built once when a view is applied
//! (never per connection): the rustls `ServerConfig` for SIMPLE, MUTUAL and
//! OPTIONAL_MUTUAL from the server's credential (or files), with Istio's
//! `minProtocolVersion`/`maxProtocolVersion`, `cipherSuites` (Envoy's names)
//! and client-certificate SANs; plus what the config dump shows of the
//! certificate (serial, validity, SANs — never key bytes).

use std::sync::Arc;

use mesh_api::gatewayview::GatewayTls;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs1KeyDer,
    PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::ServerConfig;

/// Why a server's TLS cannot be served. Never carries key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate: the server names neither a credentialName nor serverCertificate/privateKey files")]
    NoCredential,
    #[error("reading {path}: {error}")]
    File { path: String, error: String },
    #[error("certificate chain of {source_name}: {error}")]
    Chain { source_name: String, error: String },
    #[error("private key of {source_name}: {error}")]
    Key { source_name: String, error: String },
    #[error("caCertificates of {source_name}: {error}")]
    Ca { source_name: String, error: String },
    #[error("mode {mode} needs caCertificates (ca.crt, or the <name>-cacert Secret) to verify client certificates")]
    NoCa { mode: String },
    #[error("caCrl of {source_name}: {error}")]
    Crl { source_name: String, error: String },
    #[error("maxProtocolVersion {0}: this proxy serves TLS 1.2 and 1.3 only")]
    MaxVersion(String),
    #[error("{field} {value:?} is not a TLS version (TLS_AUTO, TLSV1_0 .. TLSV1_3)")]
    BadVersion { field: &'static str, value: String },
    #[error("minProtocolVersion {min} is above maxProtocolVersion {max}")]
    VersionOrder { min: String, max: String },
    #[error("cipherSuites: none of {0:?} is a suite this proxy serves (ECDHE-ECDSA/RSA with AES-GCM or CHACHA20-POLY1305)")]
    Ciphers(Vec<String>),
    #[error("{source_name}: {error}")]
    Config { source_name: String, error: String },
}

/// The certificate a server presents, as `proxy-config secret` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    /// `namespace/secret` or `file:/path`.
    pub source: String,
    /// Leaf serial, lowercase hex.
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub sans: Vec<String>,
    /// Whether a client CA comes with it (MUTUAL / OPTIONAL_MUTUAL).
    pub has_ca: bool,
}

/// A terminating server's TLS, ready for handshakes.
#[derive(Debug)]
pub struct Terminated {
    pub config: Arc<ServerConfig>,
    /// `subjectAltNames` a client certificate must carry one of (empty: any).
    pub client_sans: Vec<String>,
    pub cert: CertInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    Old,
    V12,
    V13,
}

fn version(field: &'static str, v: Option<&str>) -> Result<Option<Version>, TlsError> {
    match v.map(|s| s.to_ascii_uppercase()) {
        None => Ok(None),
        Some(s) => match s.as_str() {
            "" | "TLS_AUTO" => Ok(None),
            "TLSV1_0" | "TLSV1_1" => Ok(Some(Version::Old)),
            "TLSV1_2" => Ok(Some(Version::V12)),
            "TLSV1_3" => Ok(Some(Version::V13)),
            _ => Err(TlsError::BadVersion {
                field,
                value: s.clone(),
            }),
        },
    }
}

/// The TLS versions served, and a warning when the minimum asked for is below
/// what rustls speaks (raised to TLS 1.2, as it cannot be honoured).
fn versions(
    t: &GatewayTls,
) -> Result<(Vec<&'static rustls::SupportedProtocolVersion>, Option<String>), TlsError> {
    let min = version("minProtocolVersion", t.min_protocol_version.as_deref())?;
    let max = version("maxProtocolVersion", t.max_protocol_version.as_deref())?;
    if max == Some(Version::Old) {
        return Err(TlsError::MaxVersion(
            t.max_protocol_version.clone().unwrap_or_default(),
        ));
    }
    let warning = (min == Some(Version::Old)).then(|| {
        format!(
            "minProtocolVersion {}: this proxy serves TLS 1.2 and 1.3 only; serving TLS 1.2 and up",
            t.min_protocol_version.clone().unwrap_or_default()
        )
    });
    let lo = min.unwrap_or(Version::V12).max(Version::V12);
    let hi = max.unwrap_or(Version::V13);
    if lo > hi {
        return Err(TlsError::VersionOrder {
            min: t.min_protocol_version.clone().unwrap_or_default(),
            max: t.max_protocol_version.clone().unwrap_or_default(),
        });
    }
    let mut out = Vec::new();
    if lo <= Version::V12 && hi >= Version::V12 {
        out.push(&rustls::version::TLS12);
    }
    if hi >= Version::V13 {
        out.push(&rustls::version::TLS13);
    }
    Ok((out, warning))
}

/// Envoy's (OpenSSL's) TLS 1.2 suite names that rustls serves.
fn cipher(name: &str) -> Option<rustls::CipherSuite> {
    use rustls::CipherSuite as C;
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305" => C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

/// The crypto provider with only the TLS 1.2 suites named (TLS 1.3 suites are
/// not configurable, as in Envoy); names rustls does not serve are warnings.
fn provider(
    names: &[String],
    warnings: &mut Vec<String>,
) -> Result<rustls::crypto::CryptoProvider, TlsError> {
    let mut p = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return Ok(p);
    }
    // `[A|B]` is an equal-preference group in Envoy's syntax.
    let flat: Vec<String> = names
        .iter()
        .flat_map(|n| n.trim_matches(|c| c == '[' || c == ']').split('|'))
        .map(|n| n.trim().to_string())
        .collect();
    let (known, unknown): (Vec<_>, Vec<_>) = flat.iter().partition(|n| cipher(n).is_some());
    if known.is_empty() {
        return Err(TlsError::Ciphers(flat.clone()));
    }
    if !unknown.is_empty() {
        warnings.push(format!(
            "cipherSuites {unknown:?} are not served by this proxy; using the others"
        ));
    }
    let wanted: Vec<rustls::CipherSuite> = known.iter().filter_map(|n| cipher(n)).collect();
    p.cipher_suites.retain(|s| {
        s.version() == &rustls::version::TLS13 || wanted.contains(&s.suite())
    });
    Ok(p)
}

/// The PEM material of a server: (source, chain, key, ca, crl).
type Material = (String, String, String, Option<String>, Option<String>);

fn material(t: &GatewayTls) -> Result<Material, TlsError> {
    if let Some(c) = &t.credential {
        return Ok((
            c.source.clone(),
            c.cert_chain.clone(),
            c.private_key.clone(),
            c.ca_certificates.clone(),
            c.ca_crl.clone(),
        ));
    }
    let Some(f) = &t.files else {
        return Err(TlsError::NoCredential);
    };
    let read = |p: &str| {
        std::fs::read_to_string(p).map_err(|e| TlsError::File {
            path: p.to_string(),
            error: e.to_string(),
        })
    };
    Ok((
        format!("file:{}", f.server_certificate),
        read(&f.server_certificate)?,
        read(&f.private_key)?,
        f.ca_certificates.as_deref().map(read).transpose()?,
        None,
    ))
}

fn certs(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| e.to_string())?;
    let out: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if out.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(out)
}

fn private_key(pem_text: &str) -> Result<PrivateKeyDer<'static>, String> {
    // The parser's message never quotes the input.
    let blocks = pem::parse_many(pem_text).map_err(|e| e.to_string())?;
    for b in blocks {
        let der = b.contents().to_vec();
        match b.tag() {
            "PRIVATE KEY" => return Ok(PrivatePkcs8KeyDer::from(der).into()),
            "RSA PRIVATE KEY" => return Ok(PrivatePkcs1KeyDer::from(der).into()),
            "EC PRIVATE KEY" => return Ok(PrivateSec1KeyDer::from(der).into()),
            _ => {}
        }
    }
    Err("no PRIVATE KEY block (PKCS#8, RSA or EC)".into())
}

/// Serial, validity and SANs of a leaf certificate.
pub fn cert_info(source: &str, leaf: &[u8]) -> Result<CertInfo, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    GeneralName::URI(u) => Some(u.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertInfo {
        source: source.to_string(),
        serial: format!("{:x}", cert.serial),
        not_before: cert.validity().not_before.to_string(),
        not_after: cert.validity().not_after.to_string(),
        sans,
        has_ca: false,
    })
}

/// Builds the terminating TLS of a SIMPLE / MUTUAL / OPTIONAL_MUTUAL server.
/// `alpn`: what the server offers (`h2`, `http/1.1` for HTTPS). Warnings are
/// settings applied differently than asked (logged by the caller).
pub fn terminate(
    t: &GatewayTls,
    alpn: &[&[u8]],
    warnings: &mut Vec<String>,
) -> Result<Terminated, TlsError> {
    let (source_name, chain_pem, key_pem, ca_pem, crl_pem) = material(t)?;
    let chain = certs(&chain_pem).map_err(|error| TlsError::Chain {
        source_name: source_name.clone(),
        error,
    })?;
    let key = private_key(&key_pem).map_err(|error| TlsError::Key {
        source_name: source_name.clone(),
        error,
    })?;
    let mut info = cert_info(&source_name, &chain[0]).map_err(|error| TlsError::Chain {
        source_name: source_name.clone(),
        error,
    })?;
    let (versions, version_warning) = versions(t)?;
    warnings.extend(version_warning);
    let provider = Arc::new(provider(&t.cipher_suites, warnings)?);
    let mode = t.mode.to_ascii_uppercase();
    let verifier = match mode.as_str() {
        "MUTUAL" | "OPTIONAL_MUTUAL" => {
            let ca = ca_pem.as_deref().ok_or_else(|| TlsError::NoCa { mode: mode.clone() })?;
            let ca_err = |error: String| TlsError::Ca {
                source_name: source_name.clone(),
                error,
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca).map_err(ca_err)? {
                roots.add(c).map_err(|e| ca_err(e.to_string()))?;
            }
            info.has_ca = true;
            let mut b = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            );
            if let Some(crl) = &crl_pem {
                let crl_err = |error: String| TlsError::Crl {
                    source_name: source_name.clone(),
                    error,
                };
                let blocks = pem::parse_many(crl).map_err(|e| crl_err(e.to_string()))?;
                let crls: Vec<CertificateRevocationListDer<'static>> = blocks
                    .into_iter()
                    .filter(|b| b.tag() == "X509 CRL")
                    .map(|b| CertificateRevocationListDer::from(b.into_contents()))
                    .collect();
                if crls.is_empty() {
                    return Err(crl_err("no X509 CRL block".into()));
                }
                b = b.with_crls(crls);
            }
            if mode == "OPTIONAL_MUTUAL" {
                b = b.allow_unauthenticated();
            }
            Some(b.build().map_err(|e| TlsError::Ca {
                source_name: source_name.clone(),
                error: e.to_string(),
            })?)
        }
        _ => None,
    };
    let config_err = |e: rustls::Error| TlsError::Config {
        source_name: source_name.clone(),
        error: e.to_string(),
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(config_err)?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    // Refuses a key that does not belong to the leaf certificate.
    let mut config = builder.with_single_cert(chain, key).map_err(config_err)?;
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Terminated {
        config: Arc::new(config),
        client_sans: t.subject_alt_names.clone(),
        cert: info,
    })
}
