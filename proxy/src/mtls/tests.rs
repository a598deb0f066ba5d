//! Pure parts: modes, upstream decision, SAN extraction, XFCC.

use super::*;
use std::collections::BTreeMap;

#[test]
fn inbound_modes() {
    let mut p = mesh_api::syncapi::InboundPolicy {
        mtls_mode: "STRICT".into(),
        ..Default::default()
    };
    p.port_mtls.insert(9000, "PERMISSIVE".into());
    p.port_mtls.insert(9100, "DISABLE".into());
    assert_eq!(InboundMode::for_port(&p, 8080), InboundMode::Strict);
    assert_eq!(InboundMode::for_port(&p, 9000), InboundMode::Permissive);
    assert_eq!(InboundMode::for_port(&p, 9100), InboundMode::Disable);
    assert_eq!(InboundMode::parse(""), InboundMode::Permissive);
    assert_eq!(InboundMode::parse("UNSET"), InboundMode::Permissive);
}

#[test]
fn upstream_decision() {
    let meshed = BTreeMap::from([(TLS_MODE_LABEL.to_string(), "istio".to_string())]);
    let plain = BTreeMap::new();
    assert_eq!(UpstreamTls::decide(None, &meshed), UpstreamTls::Auto);
    assert_eq!(UpstreamTls::decide(None, &plain), UpstreamTls::Plaintext);
    assert_eq!(
        UpstreamTls::decide(Some("DISABLE"), &meshed),
        UpstreamTls::Plaintext
    );
    assert_eq!(
        UpstreamTls::decide(Some("ISTIO_MUTUAL"), &plain),
        UpstreamTls::IstioMutual
    );
}

fn leaf(sans: Vec<rcgen::SanType>) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = sans;
    p.self_signed(&key).unwrap().der().to_vec()
}

fn uri(s: &str) -> rcgen::SanType {
    rcgen::SanType::URI(s.to_string().try_into().unwrap())
}

#[test]
fn spiffe_san_extraction() {
    let der = leaf(vec![
        rcgen::SanType::DnsName("x.example".try_into().unwrap()),
        uri("spiffe://cluster.local/ns/shop/sa/cart"),
    ]);
    let id = mesh_identity(&der, "cluster.local").unwrap();
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
    assert!(matches!(
        mesh_identity(&der, "other.domain"),
        Err(PeerError::TrustDomain(..))
    ));
    let der = leaf(vec![uri("https://example.com/x")]);
    assert_eq!(spiffe_identity(&der), Err(PeerError::NoSpiffe));
    let der = leaf(vec![]);
    assert_eq!(spiffe_identity(&der), Err(PeerError::NoSpiffe));
    let der = leaf(vec![uri("spiffe://cluster.local/ns/a")]);
    assert!(matches!(spiffe_identity(&der), Err(PeerError::Identity(_))));
    assert_eq!(spiffe_identity(b"junk"), Err(PeerError::Parse));
}

#[test]
fn xfcc_format() {
    let peer: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
    let der = b"not really a certificate";
    let hash = cert_hash(der);
    assert_eq!(hash.len(), 64);
    // sha256("not really a certificate"), computed with sha256sum.
    assert_eq!(
        hash,
        "d6182255e5739d55fc9781759c7a823d4dff3d2b7d17949e7085ee7c0cc22acf"
    );
    assert_eq!(
        xfcc("spiffe://cluster.local/ns/default/sa/echo", &hash, &peer),
        format!(
            "By=spiffe://cluster.local/ns/default/sa/echo;Hash={hash};Subject=\"\";URI=spiffe://cluster.local/ns/shop/sa/cart"
        )
    );
}
