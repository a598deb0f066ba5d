//! Certificate checks for mesh connections. Workload certificates carry a SPIFFE
//! URI SAN and no DNS name, so the usual host-name check of a server certificate
//! does not apply: as Envoy does for Istio, the server's chain is verified against
//! the mesh roots and its identity must be a SPIFFE identity of our trust domain.
//! The client side uses rustls' WebPKI client verifier (chain to the mesh roots,
//! client certificate mandatory); the identity is checked after the handshake.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, Error, SignatureScheme};

/// Verifies a peer sidecar acting as server.
#[derive(Debug)]
pub struct MeshServerVerifier {
    /// Chain verification is the same as for clients (our leaves carry both
    /// serverAuth and clientAuth usages), so the WebPKI client verifier does it.
    chain: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl MeshServerVerifier {
    pub fn new(chain: Arc<dyn ClientCertVerifier>, trust_domain: &str) -> MeshServerVerifier {
        MeshServerVerifier {
            chain,
            trust_domain: trust_domain.to_string(),
        }
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
        super::mesh_identity(end_entity, &self.trust_domain)
            .map_err(|e| Error::General(format!("peer certificate rejected: {e}")))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}
