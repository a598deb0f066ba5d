//! Client certificates on 15012. The TLS listener asks every caller for a
//! certificate but requires none (a proxy's first connection has none yet; a
//! CSR is authenticated by its token). During the handshake only the proof of
//! possession is checked ([`OfferClientCert`]): the chain itself is verified
//! afterwards by [`identity`], against the roots of the CA in force at that
//! moment (every root of `root-cert.pem`, so both during a root rotation), so a
//! certificate that does not qualify gets a subscription refusal that names
//! why (not signed by the mesh CA, expired, another trust domain, no SPIFFE
//! identity) — logged and counted like any other — rather than a bare TLS alert.

use mesh_api::identity::PeerError;
use mesh_api::Identity;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

/// Why a presented client certificate does not authenticate its caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertRefusal {
    #[error("the client certificate is not signed by the mesh CA (none of its {roots} trusted root(s) issued it)")]
    UnknownIssuer { roots: usize },
    #[error(
        "the client certificate expired {ago_s}s ago (notAfter {not_after_unix} in Unix seconds)"
    )]
    Expired { not_after_unix: u64, ago_s: u64 },
    #[error("the client certificate is not valid yet")]
    NotYetValid,
    #[error("the client certificate is not usable for client authentication (extended key usage)")]
    NotClientAuth,
    #[error("the client certificate is not valid: {0}")]
    Invalid(String),
    #[error("the mesh CA's roots are unusable: {0}")]
    Roots(String),
    #[error("the client certificate gives no mesh identity: {0}")]
    Identity(#[from] PeerError),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The identity `chain` (leaf first, as the peer sent it) proves: it must chain
/// to one of `roots_pem`, be valid at `now`, allow client authentication, and
/// carry a SPIFFE identity of `trust_domain`.
pub fn identity(
    chain: &[CertificateDer<'_>],
    roots_pem: &[String],
    trust_domain: &str,
    now: UnixTime,
) -> Result<Identity, CertRefusal> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(CertRefusal::Invalid("no certificate".into()));
    };
    let mut roots = rustls::RootCertStore::empty();
    for p in roots_pem {
        for block in pem::parse_many(p).map_err(|e| CertRefusal::Roots(e.to_string()))? {
            roots
                .add(CertificateDer::from(block.into_contents()))
                .map_err(|e| CertRefusal::Roots(e.to_string()))?;
        }
    }
    let n = roots.len();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| CertRefusal::Roots(e.to_string()))?;
    verifier
        .verify_client_cert(leaf, intermediates, now)
        .map_err(|e| refusal(e, n))?;
    Ok(mesh_api::identity::mesh_identity(leaf, trust_domain)?)
}

fn refusal(e: rustls::Error, roots: usize) -> CertRefusal {
    let rustls::Error::InvalidCertificate(c) = e else {
        return CertRefusal::Invalid(e.to_string());
    };
    match c {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            CertRefusal::UnknownIssuer { roots }
        }
        CertificateError::ExpiredContext { time, not_after } => CertRefusal::Expired {
            not_after_unix: not_after.as_secs(),
            ago_s: time.as_secs().saturating_sub(not_after.as_secs()),
        },
        CertificateError::Expired => CertRefusal::Expired {
            not_after_unix: 0,
            ago_s: 0,
        },
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            CertRefusal::NotYetValid
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            CertRefusal::NotClientAuth
        }
        other => CertRefusal::Invalid(format!("{other:?}")),
    }
}

/// The handshake side: offers client authentication, requires none, and checks
/// only that a presented certificate's key signed the handshake (the chain is
/// judged by [`identity`] once the subscription arrives).
#[derive(Debug)]
pub struct OfferClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl Default for OfferClientCert {
    fn default() -> Self {
        OfferClientCert {
            algs: provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for OfferClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deliberately deferred to `identity`: a connection whose certificate
        // does not qualify may do no more than one that presented none.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_e2e::testca::TestCa;

    fn check(leaf: &mesh_e2e::testca::Leaf, roots: &[&TestCa]) -> Result<Identity, CertRefusal> {
        let roots: Vec<String> = roots.iter().map(|r| r.pem.clone()).collect();
        let chain = [CertificateDer::from(leaf.cert_der.clone())];
        identity(&chain, &roots, "cluster.local", UnixTime::now())
    }

    #[test]
    fn only_a_current_mesh_certificate_of_our_trust_domain_names_its_caller() {
        let (mesh, other) = (TestCa::new("mesh", None), TestCa::new("other", None));
        let web = "spiffe://cluster.local/ns/shop/sa/web";
        assert_eq!(
            check(&mesh.workload(web, false), &[&mesh]),
            Ok(Identity::new("cluster.local", "shop", "web").unwrap())
        );
        // During a root rotation every trusted root counts.
        assert!(check(&other.workload(web, false), &[&mesh, &other]).is_ok());
        let e = check(&other.workload(web, false), &[&mesh]).unwrap_err();
        assert_eq!(e, CertRefusal::UnknownIssuer { roots: 1 });
        assert!(e.to_string().contains("not signed by the mesh CA"), "{e}");
        let e = check(&mesh.workload(web, true), &[&mesh]).unwrap_err();
        assert!(
            matches!(e, CertRefusal::Expired { ago_s, .. } if ago_s > 365 * 24 * 3600),
            "{e:?}"
        );
        assert!(e.to_string().contains("expired"), "{e}");
        let foreign = "spiffe://other.domain/ns/shop/sa/web";
        let e = check(&mesh.workload(foreign, false), &[&mesh]).unwrap_err();
        assert!(
            matches!(e, CertRefusal::Identity(PeerError::TrustDomain(..))),
            "{e:?}"
        );
        assert!(e.to_string().contains("\"other.domain\""), "{e}");
        let e = check(&mesh.leaf("web", &["web.shop"], true), &[&mesh]).unwrap_err();
        assert_eq!(e, CertRefusal::Identity(PeerError::NoSpiffe));
        // A server-only certificate does not authenticate a client.
        let e = check(&mesh.leaf("web", &["web.shop"], false), &[&mesh]).unwrap_err();
        assert_eq!(e, CertRefusal::NotClientAuth, "{e}");
        assert!(identity(
            &[],
            std::slice::from_ref(&mesh.pem),
            "cluster.local",
            UnixTime::now()
        )
        .is_err());
    }
}
