//! Certificate checks for mesh connections. Workload certificates carry a SPIFFE
//! URI SAN and no DNS name, so the usual host-name check of a server certificate
//! does not apply: as Envoy does for Istio, the server's chain is verified against
//! the mesh roots and its identity must be a SPIFFE identity of our trust domain.
//! The client side uses rustls' WebPKI client verifier (chain to the mesh roots,
//! client certificate mandatory); the identity is checked after the handshake.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, Error, SignatureScheme};

/// The handshake-signature half of `ServerCertVerifier`, the same for every
/// verifier here: checked with the algorithms `self.algorithms()` returns (the
/// crypto provider's), so only the certificate checks differ.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms().supported_schemes()
        }
    };
}

/// Verifies a peer sidecar acting as server.
#[derive(Debug)]
pub struct MeshServerVerifier {
    /// Chain verification is the same as for clients (our leaves carry both
    /// serverAuth and clientAuth usages), so the WebPKI client verifier does it.
    chain: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MeshServerVerifier {
    pub fn new(
        chain: Arc<dyn ClientCertVerifier>,
        trust_domain: &str,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> MeshServerVerifier {
        MeshServerVerifier {
            chain,
            trust_domain: trust_domain.to_string(),
            algorithms,
        }
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.algorithms
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.chain
            .verify_client_cert(end_entity, intermediates, now)?;
        mesh_api::identity::mesh_identity(end_entity, &self.trust_domain)
            .map_err(|e| Error::General(format!("peer certificate rejected: {e}")))?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Whether a mesh server's certificate names one of the destination's expected
/// identities (Istio's SAN pinning for `ISTIO_MUTUAL` and auto mTLS). An empty
/// list accepts any identity of the trust domain, as Envoy does without SANs.
pub fn check_identity(end_entity: &[u8], expected: &[String]) -> Result<(), String> {
    if expected.is_empty() {
        return Ok(());
    }
    let id = mesh_api::identity::spiffe_identity(end_entity).map_err(|e| e.to_string())?;
    let id = id.to_string();
    if expected.contains(&id) {
        Ok(())
    } else {
        Err(format!(
            "upstream identity {id} is not one of the destination's identities [{}]",
            expected.join(", ")
        ))
    }
}

/// Verifies an external server for `SIMPLE`/`MUTUAL` origination: the chain to
/// the configured roots, then the name: one of `subjectAltNames` (DNS with the
/// certificate's wildcards, IP or URI SANs, exact) when given, else the SNI.
/// `insecureSkipVerify` keeps only the handshake signature check.
#[derive(Debug)]
pub struct OriginVerifier {
    roots: Option<Arc<rustls::RootCertStore>>,
    sans: Vec<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl OriginVerifier {
    pub fn new(
        roots: Arc<rustls::RootCertStore>,
        sans: Vec<String>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> OriginVerifier {
        OriginVerifier {
            roots: Some(roots),
            sans,
            provider,
        }
    }
    pub fn insecure(provider: Arc<rustls::crypto::CryptoProvider>) -> OriginVerifier {
        OriginVerifier {
            roots: None,
            sans: Vec::new(),
            provider,
        }
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl ServerCertVerifier for OriginVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.sans.is_empty() {
            rustls::client::verify_server_name(&cert, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        if san_matches(end_entity, &self.sans) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(format!(
                "server certificate matches none of subjectAltNames [{}]",
                self.sans.join(", ")
            )))
        }
    }

    handshake_signatures!();
}

/// Whether any SAN of the certificate equals one of `wanted` (a DNS SAN
/// `*.example.com` covers one label, as in host-name checks).
pub fn san_matches(der: &[u8], wanted: &[String]) -> bool {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let dns = |pattern: &str, name: &str| -> bool {
        let (p, n) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
        match p.strip_prefix("*.") {
            Some(rest) => n
                .split_once('.')
                .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
            None => p == n,
        }
    };
    san.value.general_names.iter().any(|g| match g {
        GeneralName::DNSName(d) => wanted.iter().any(|w| dns(d, w)),
        GeneralName::URI(u) => wanted.iter().any(|w| w == u),
        GeneralName::IPAddress(b) => {
            let ip = match b.len() {
                4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                _ => None,
            };
            ip.is_some_and(|ip| wanted.iter().any(|w| w.parse() == Ok(ip)))
        }
        _ => false,
    })
}
