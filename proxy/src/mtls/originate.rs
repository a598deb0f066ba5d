//! How connections of one cluster are secured, decided once per snapshot from
//! the DestinationRule's client TLS settings (merged as Istio merges top-level,
//! port-level and subset policies) and the destination's expected identities.
//!
//! `ISTIO_MUTUAL` and auto mTLS pin the server's SPIFFE identity to the
//! destination's service accounts (or the rule's `subjectAltNames`). `SIMPLE`
//! and `MUTUAL` originate TLS with rustls from files mounted in the pod
//! (`caCertificates`, else the system roots; `clientCertificate` +
//! `privateKey`), SNI `sni` or the destination host, and the server's name
//! checked against `subjectAltNames` or the SNI. A settings error never
//! falls back to plaintext: the cluster's requests fail with 503.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use mesh_api::networking::{ClientTlsSettings, DestinationRuleSpec, Subset};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;

use super::verify::OriginVerifier;

/// The pod label Istio sets on injected workloads; endpoints carrying it get mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// How a connection to one endpoint is secured (DestinationRule `tls.mode`, or
/// auto mTLS from the endpoint's `security.istio.io/tlsMode` label); decided per
/// cluster by [`ClusterTls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTls {
    Plaintext,
    /// Auto mTLS: the endpoint has a sidecar; plaintext if we have no certificate
    /// yet. The server must present one of these identities (empty: any).
    Auto(Sans),
    /// `ISTIO_MUTUAL`: mTLS or nothing, pinned like [`UpstreamTls::Auto`].
    IstioMutual(Sans),
    /// `SIMPLE`/`MUTUAL`: TLS origination with the rule's settings (or their error).
    Originate(Origin),
}

/// Why a SIMPLE/MUTUAL setting cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginateError {
    #[error("reading {field} file {path:?}: {reason}")]
    File {
        field: &'static str,
        path: String,
        reason: String,
    },
    #[error("{field} file {path:?} holds no usable PEM {what}")]
    Pem {
        field: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("credentialName {0:?} is not supported for sidecars yet; use clientCertificate/privateKey/caCertificates files")]
    CredentialName(String),
    #[error("mode MUTUAL needs clientCertificate and privateKey")]
    NoClientCert,
    #[error("no system CA certificates could be loaded and caCertificates is not set")]
    NoRoots,
    #[error("sni {0:?} is not a valid server name")]
    Sni(String),
    #[error("TLS config: {0}")]
    Tls(String),
}

/// Identities a mesh server may present (full SPIFFE URIs); empty accepts any
/// identity of our trust domain, as Istio does when it knows none.
// A thin pointer (not `Arc<[String]>`): every compiled endpoint carries its
// `UpstreamTls`, and the fat pointer made each one 16 bytes larger.
pub type Sans = Arc<Vec<String>>;

/// A built origination config, or why there is none.
#[derive(Clone)]
pub struct Origin(pub Arc<Result<Originated, OriginateError>>);

/// The client configs of one SIMPLE/MUTUAL cluster, per upstream protocol.
pub struct Originated {
    pub h1: Arc<ClientConfig>,
    pub h2: Arc<ClientConfig>,
    pub tcp: Arc<ClientConfig>,
    pub sni: ServerName<'static>,
    /// Pools keep connections with different TLS settings apart.
    pub pool_key: u64,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Ok(o) => write!(f, "Origin(sni={:?})", o.sni),
            Err(e) => write!(f, "Origin(error: {e})"),
        }
    }
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Origin {}

/// Istio's effective client TLS for `port` (and `subset`): port-level settings
/// replace the level's TLS entirely (they do not inherit), a subset's policy
/// overrides the rule's, and the subset's own port-level settings come last.
pub fn effective_tls(
    rule: Option<&DestinationRuleSpec>,
    subset: Option<&Subset>,
    port: u16,
) -> Option<ClientTlsSettings> {
    let level = |tp: &mesh_api::networking::TrafficPolicy,
                 inherited: Option<ClientTlsSettings>|
     -> Option<ClientTlsSettings> {
        let base = tp.tls.clone().or(inherited);
        match tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
        {
            Some(p) => p.tls.clone(),
            None => base,
        }
    };
    let mut tls = rule
        .and_then(|r| r.traffic_policy.as_ref())
        .and_then(|tp| level(tp, None));
    if let Some(tp) = subset.and_then(|s| s.traffic_policy.as_ref()) {
        tls = level(tp, tls);
    }
    tls
}

/// The TLS decision of one cluster; [`ClusterTls::for_endpoint`] applies it.
#[derive(Debug, Clone)]
pub enum ClusterTls {
    /// No rule: mTLS to endpoints labelled as meshed.
    Auto(Sans),
    Disable,
    IstioMutual(Sans),
    Originate(Origin),
}

impl ClusterTls {
    /// `service_sans` are the destination's identities from the agent.
    pub fn compile(
        settings: Option<&ClientTlsSettings>,
        host: &str,
        service_sans: &[String],
    ) -> ClusterTls {
        let sans = |s: Option<&ClientTlsSettings>| -> Sans {
            match s.filter(|s| !s.subject_alt_names.is_empty()) {
                Some(s) => s.subject_alt_names.clone().into(),
                None => service_sans.to_vec().into(),
            }
        };
        let mode = settings
            .and_then(|s| s.mode.as_deref())
            .map(str::to_ascii_uppercase);
        match (mode.as_deref(), settings) {
            (Some("DISABLE"), _) => ClusterTls::Disable,
            (Some("ISTIO_MUTUAL"), s) => ClusterTls::IstioMutual(sans(s)),
            (Some(m @ ("SIMPLE" | "MUTUAL")), Some(s)) => {
                // An error is kept (the cluster fails with 503) and reported by
                // the snapshot's warnings.
                ClusterTls::Originate(Origin(Arc::new(build(s, m == "MUTUAL", host))))
            }
            // No TLS settings at all: auto mTLS. Settings without a mode mean
            // DISABLE (the API's zero value), as in Istio.
            (_, None) => ClusterTls::Auto(sans(None)),
            (_, Some(_)) => ClusterTls::Disable,
        }
    }

    pub fn for_endpoint(&self, labels: &std::collections::BTreeMap<String, String>) -> UpstreamTls {
        match self {
            ClusterTls::Disable => UpstreamTls::Plaintext,
            ClusterTls::IstioMutual(s) => UpstreamTls::IstioMutual(s.clone()),
            ClusterTls::Originate(o) => UpstreamTls::Originate(o.clone()),
            ClusterTls::Auto(s) => {
                if labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio") {
                    UpstreamTls::Auto(s.clone())
                } else {
                    UpstreamTls::Plaintext
                }
            }
        }
    }
}

/// A stable pool key for a set of TLS parameters (never 0, which is plaintext).
pub fn pool_key(parts: impl Hash) -> u64 {
    // Fixed seed: equal parameters give equal keys in every snapshot, so
    // pooled connections outlive config pushes. Not SipHash: every mTLS
    // request computes its endpoint's key, and the inputs come from config.
    foldhash::quality::FixedState::with_seed(0x6d65_7368).hash_one(parts) | 1
}

fn read(field: &'static str, path: &str) -> Result<Vec<pem::Pem>, OriginateError> {
    let text = std::fs::read(path).map_err(|e| OriginateError::File {
        field,
        path: path.into(),
        reason: e.to_string(),
    })?;
    pem::parse_many(&text).map_err(|e| OriginateError::File {
        field,
        path: path.into(),
        reason: format!("bad PEM: {e}"),
    })
}

fn certs(field: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, OriginateError> {
    let out: Vec<_> = read(field, path)?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if out.is_empty() {
        return Err(OriginateError::Pem {
            field,
            path: path.into(),
            what: "CERTIFICATE",
        });
    }
    Ok(out)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, OriginateError> {
    read("privateKey", path)?
        .into_iter()
        .find_map(|b| match b.tag() {
            "PRIVATE KEY" => Some(PrivateKeyDer::Pkcs8(b.into_contents().into())),
            "EC PRIVATE KEY" => Some(PrivateKeyDer::Sec1(b.into_contents().into())),
            "RSA PRIVATE KEY" => Some(PrivateKeyDer::Pkcs1(b.into_contents().into())),
            _ => None,
        })
        .ok_or_else(|| OriginateError::Pem {
            field: "privateKey",
            path: path.into(),
            what: "PRIVATE KEY",
        })
}

fn roots(s: &ClientTlsSettings) -> Result<Arc<rustls::RootCertStore>, OriginateError> {
    let Some(path) = s.ca_certificates.as_deref().filter(|p| !p.is_empty()) else {
        // Istio verifies against the OS trust store when no CA is given. It is
        // read once: snapshots are recompiled on every config change.
        static SYSTEM: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
        let store = SYSTEM.get_or_init(|| {
            let mut store = rustls::RootCertStore::empty();
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(store)
        });
        if store.is_empty() {
            return Err(OriginateError::NoRoots);
        }
        return Ok(store.clone());
    };
    let mut store = rustls::RootCertStore::empty();
    for c in certs("caCertificates", path)? {
        store.add(c).map_err(|e| OriginateError::File {
            field: "caCertificates",
            path: path.into(),
            reason: format!("bad CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(store))
}

/// Builds the client configs of a SIMPLE (`mutual` false) or MUTUAL cluster.
pub fn build(
    s: &ClientTlsSettings,
    mutual: bool,
    host: &str,
) -> Result<Originated, OriginateError> {
    if let Some(c) = s.credential_name.as_ref().filter(|c| !c.is_empty()) {
        return Err(OriginateError::CredentialName(c.clone()));
    }
    let sni_name = s
        .sni
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| host.to_string());
    let sni = ServerName::try_from(sni_name.clone())
        .map_err(|_| OriginateError::Sni(sni_name.clone()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = if s.insecure_skip_verify == Some(true) {
        OriginVerifier::insecure(provider.clone())
    } else {
        OriginVerifier::new(roots(s)?, s.subject_alt_names.clone(), provider.clone())
    };
    let client_auth = if mutual {
        match (s.client_certificate.as_deref(), s.private_key.as_deref()) {
            (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => {
                Some((certs("clientCertificate", c)?, key(k)?))
            }
            _ => return Err(OriginateError::NoClientCert),
        }
    } else {
        None
    };
    let verifier = Arc::new(verifier);
    let make = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, OriginateError> {
        let b = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| OriginateError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut c = match &client_auth {
            Some((chain, key)) => b
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| OriginateError::Tls(format!("client certificate/key: {e}")))?,
            None => b.with_no_client_auth(),
        };
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(c))
    };
    Ok(Originated {
        h1: make(&[])?,
        h2: make(&[b"h2"])?,
        tcp: make(&[])?,
        pool_key: pool_key(("originate", &sni_name, format!("{s:?}"), mutual)),
        sni,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::networking::{PortTrafficPolicy, TrafficPolicy};

    fn tls(mode: &str) -> Option<ClientTlsSettings> {
        Some(ClientTlsSettings {
            mode: Some(mode.into()),
            ..Default::default()
        })
    }
    fn port(n: u32, t: Option<ClientTlsSettings>) -> PortTrafficPolicy {
        PortTrafficPolicy {
            port: Some(mesh_api::networking::PortSelector {
                number: Some(n),
                ..Default::default()
            }),
            tls: t,
            ..Default::default()
        }
    }

    #[test]
    fn istio_merge_of_tls_settings() {
        let rule = DestinationRuleSpec {
            host: "h".into(),
            traffic_policy: Some(TrafficPolicy {
                tls: tls("ISTIO_MUTUAL"),
                port_level_settings: vec![port(80, tls("SIMPLE")), port(81, None)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mode = |t: Option<ClientTlsSettings>| t.and_then(|t| t.mode);
        assert_eq!(
            mode(effective_tls(Some(&rule), None, 8080)).as_deref(),
            Some("ISTIO_MUTUAL")
        );
        assert_eq!(
            mode(effective_tls(Some(&rule), None, 80)).as_deref(),
            Some("SIMPLE")
        );
        // Port-level settings do not inherit the top-level TLS.
        assert_eq!(mode(effective_tls(Some(&rule), None, 81)), None);
        assert_eq!(effective_tls(None, None, 80), None);
        let subset = Subset {
            name: "v2".into(),
            traffic_policy: Some(TrafficPolicy {
                tls: tls("DISABLE"),
                port_level_settings: vec![port(443, tls("MUTUAL"))],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            mode(effective_tls(Some(&rule), Some(&subset), 8080)).as_deref(),
            Some("DISABLE")
        );
        assert_eq!(
            mode(effective_tls(Some(&rule), Some(&subset), 80)).as_deref(),
            Some("DISABLE")
        );
        assert_eq!(
            mode(effective_tls(Some(&rule), Some(&subset), 443)).as_deref(),
            Some("MUTUAL")
        );
        // A subset without its own TLS keeps the rule's for the port.
        let plain_subset = Subset {
            name: "v1".into(),
            traffic_policy: Some(TrafficPolicy::default()),
            ..Default::default()
        };
        assert_eq!(
            mode(effective_tls(Some(&rule), Some(&plain_subset), 80)).as_deref(),
            Some("SIMPLE")
        );
    }
}
