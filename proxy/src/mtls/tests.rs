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
    use mesh_api::networking::ClientTlsSettings;
    use originate::ClusterTls;
    let meshed = BTreeMap::from([(TLS_MODE_LABEL.to_string(), "istio".to_string())]);
    let plain = BTreeMap::new();
    let sas = vec!["spiffe://cluster.local/ns/default/sa/echo".to_string()];
    let mode = |m: &str| ClientTlsSettings {
        mode: Some(m.into()),
        ..Default::default()
    };
    let c = |s: Option<&ClientTlsSettings>| ClusterTls::compile(s, "h", &sas);
    assert_eq!(
        c(None).for_endpoint(&meshed),
        UpstreamTls::Auto(sas.clone().into())
    );
    assert_eq!(c(None).for_endpoint(&plain), UpstreamTls::Plaintext);
    assert_eq!(
        c(Some(&mode("DISABLE"))).for_endpoint(&meshed),
        UpstreamTls::Plaintext
    );
    // TLS settings without a mode are DISABLE (the API's zero value).
    assert_eq!(
        c(Some(&ClientTlsSettings::default())).for_endpoint(&meshed),
        UpstreamTls::Plaintext
    );
    assert_eq!(
        c(Some(&mode("ISTIO_MUTUAL"))).for_endpoint(&plain),
        UpstreamTls::IstioMutual(sas.clone().into())
    );
    // The rule's subjectAltNames replace the service accounts.
    let pinned = ClientTlsSettings {
        subject_alt_names: vec!["spiffe://cluster.local/ns/x/sa/y".into()],
        ..mode("ISTIO_MUTUAL")
    };
    assert_eq!(
        c(Some(&pinned)).for_endpoint(&meshed),
        UpstreamTls::IstioMutual(vec!["spiffe://cluster.local/ns/x/sa/y".to_string()].into())
    );
    // SIMPLE/MUTUAL never fall back to plaintext, even when unusable.
    let broken = ClientTlsSettings {
        ca_certificates: Some("/nonexistent/ca.pem".into()),
        ..mode("SIMPLE")
    };
    match c(Some(&broken)).for_endpoint(&plain) {
        UpstreamTls::Originate(o) => {
            let e = o.0.as_ref().as_ref().err().unwrap().to_string();
            assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let cred = ClientTlsSettings {
        credential_name: Some("my-secret".into()),
        ..mode("SIMPLE")
    };
    match c(Some(&cred)).for_endpoint(&plain) {
        UpstreamTls::Originate(o) => assert!(matches!(
            o.0.as_ref(),
            Err(originate::OriginateError::CredentialName(_))
        )),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pinned_identity() {
    let der = leaf(vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from("spiffe://cluster.local/ns/default/sa/echo").unwrap(),
    )]);
    let echo = "spiffe://cluster.local/ns/default/sa/echo".to_string();
    let other = "spiffe://cluster.local/ns/default/sa/other".to_string();
    assert!(verify::check_identity(&der, &[]).is_ok());
    assert!(verify::check_identity(&der, &[other.clone(), echo.clone()]).is_ok());
    let e = verify::check_identity(&der, std::slice::from_ref(&other)).unwrap_err();
    assert!(e.contains("sa/echo") && e.contains("sa/other"), "{e}");
}

#[test]
fn san_list_matching() {
    let der = leaf(vec![
        rcgen::SanType::DnsName(rcgen::string::Ia5String::try_from("*.example.com").unwrap()),
        rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()),
    ]);
    let m = |w: &[&str]| {
        verify::san_matches(&der, &w.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    };
    assert!(m(&["api.example.com"]));
    assert!(m(&["nope.test", "10.1.2.3"]));
    assert!(!m(&["a.b.example.com"]));
    assert!(!m(&["example.com"]));
    assert!(!m(&["other.test"]));
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

#[test]
fn simple_without_ca_certificates_uses_the_os_trust_store() {
    let s = mesh_api::networking::ClientTlsSettings {
        mode: Some("SIMPLE".into()),
        ..Default::default()
    };
    let built = originate::build(&s, false, "api.example.com");
    if std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        let o = built.unwrap();
        assert_eq!(
            o.sni,
            rustls::pki_types::ServerName::try_from("api.example.com").unwrap()
        );
    } else {
        assert_eq!(built.err(), Some(originate::OriginateError::NoRoots));
    }
    // MUTUAL without a client certificate is refused, never sent without one.
    assert_eq!(
        originate::build(&s, true, "api.example.com").err(),
        Some(originate::OriginateError::NoClientCert)
    );
}

#[test]
fn mesh_sni_names_the_cluster_and_falls_back_to_the_host_then_the_address() {
    use rustls::pki_types::ServerName;
    use stream::Sni;
    let mesh = |host: &str| Sni::Mesh {
        port: 9080,
        host: std::sync::Arc::from(host),
        ip: "10.88.0.7".parse().unwrap(),
    };
    let name = |s: &str| ServerName::try_from(s.to_string()).unwrap();
    assert_eq!(
        mesh("reviews.default.svc.cluster.local").server_name(),
        name("outbound_.9080_._.reviews.default.svc.cluster.local")
    );
    // A host of 243 bytes is a name, but not once prefixed (over 253).
    let long = [&*"a".repeat(59); 4].join(".") + ".com";
    assert_eq!(mesh(&long).server_name(), name(&long));
    // Not a name at all: the endpoint's address.
    let ip: std::net::IpAddr = "10.88.0.7".parse().unwrap();
    assert_eq!(
        mesh("bad host").server_name(),
        ServerName::IpAddress(ip.into())
    );
    assert_eq!(
        Sni::Name(name("api.example.com")).server_name(),
        name("api.example.com")
    );
}
