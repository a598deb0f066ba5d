//! Mutual TLS between sidecars, as Istio does it: every proxy holds a SPIFFE
//! workload certificate from the mesh CA ([`certs`]), originates TLS 1.3 with
//! Istio's ALPN values towards meshed endpoints and terminates it inbound per the
//! PeerAuthentication mode (`inbound::tls`). This module holds the pure parts: ALPN names, the
//! inbound mode of a port, the peer identity of a certificate (from mesh-api) and the
//! `X-Forwarded-Client-Cert` value.

pub mod certs;
pub mod handshake;
pub mod originate;
pub mod record;
pub mod session;
pub mod stream;
pub mod verify;

use mesh_api::Identity;

/// ALPN an HTTP/1.1 upstream connection offers (Istio's `istio-http/1.1`).
pub const ALPN_HTTP1: &[u8] = b"istio-http/1.1";
/// ALPN for HTTP/2 upstream connections.
pub const ALPN_H2: &[u8] = b"istio-h2";
/// ALPN for opaque TCP.
pub const ALPN_TCP: &[u8] = b"istio";
/// Every Istio ALPN a sidecar terminates (HTTP/1.0 as Istio lists it too).
pub const ISTIO_ALPNS: [&[u8]; 5] = [
    ALPN_H2,
    ALPN_HTTP1,
    b"istio-http/1.0",
    ALPN_TCP,
    b"istio-peer-exchange",
];

pub use originate::{UpstreamTls, TLS_MODE_LABEL};

/// The XFCC header (parsed once: every inbound request removes it).
pub const XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");

/// PeerAuthentication mode for inbound traffic on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundMode {
    /// mTLS and plaintext both accepted (told apart by the first bytes).
    Permissive,
    /// Only mTLS from a mesh identity.
    Strict,
    /// Plaintext only: TLS is passed through to the app untouched.
    Disable,
}

impl InboundMode {
    /// Istio's reading: `UNSET`/empty/unknown inherit the default, PERMISSIVE.
    pub fn parse(s: &str) -> InboundMode {
        match s.to_ascii_uppercase().as_str() {
            "STRICT" => InboundMode::Strict,
            "DISABLE" => InboundMode::Disable,
            _ => InboundMode::Permissive,
        }
    }

    /// The mode for `port` under the view's inbound policy (port overrides first).
    pub fn for_port(policy: &mesh_api::syncapi::InboundPolicy, port: u16) -> InboundMode {
        match policy.port_mtls.get(&port) {
            Some(m) => InboundMode::parse(m),
            None => InboundMode::parse(&policy.mtls_mode),
        }
    }
}

// The SPIFFE identity of a certificate is shared vocabulary: the agent
// authenticates 15012 subscriptions by it too.
pub use mesh_api::identity::{mesh_identity, spiffe_identity, PeerError};

/// Lower-case hex SHA-256 of the peer's leaf certificate (XFCC `Hash`).
pub fn cert_hash(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Istio's `X-Forwarded-Client-Cert` element for a sidecar's inbound request:
/// `By=<our identity>;Hash=<sha256 of the peer cert>;Subject="";URI=<peer identity>`.
pub fn xfcc(by: &str, hash: &str, peer: &Identity) -> String {
    format!("By={by};Hash={hash};Subject=\"\";URI={peer}")
}

/// What we learnt about the peer of an mTLS connection.
#[derive(Debug, Clone)]
pub struct PeerCert {
    pub identity: Identity,
    pub hash: String,
}

impl PeerCert {
    pub fn from_der(der: &[u8], trust_domain: &str) -> Result<PeerCert, PeerError> {
        Ok(PeerCert {
            identity: mesh_identity(der, trust_domain)?,
            hash: cert_hash(der),
        })
    }
}

#[cfg(test)]
mod tests;
