//! The sidecar TLS configs against bad peers, over real TLS 1.3 handshakes in
//! memory: a certificate from another CA, a foreign trust domain, an expired
//! certificate, TLS 1.2 only, and a root rotation (two roots trusted at once).

use std::sync::Arc;

use mesh_proxy::mtls::certs::{build_creds, Creds};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::ServerName;

struct Root {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn root(name: &str) -> Root {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, name);
    let pem = p.self_signed(&key).unwrap().pem();
    Root {
        issuer: Issuer::new(p, key),
        pem,
    }
}

/// A workload certificate from `by`, valid from `from` to `to` days around now.
fn creds(by: &Root, spiffe: &str, from: i64, to: i64, roots: &[&Root]) -> Creds {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(spiffe.to_string().try_into().unwrap())];
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from);
    p.not_after = now + time::Duration::days(to);
    let leaf = p.signed_by(&key, &by.issuer).unwrap();
    let roots: Vec<String> = roots.iter().map(|r| r.pem.clone()).collect();
    build_creds(
        &[leaf.pem(), by.pem.clone()],
        key.serialize_der(),
        &roots,
        "cluster.local",
    )
    .unwrap()
}

const CLIENT: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const SERVER: &str = "spiffe://cluster.local/ns/shop/sa/inventory";

/// Runs one handshake; Ok(peer identity the server saw, ALPN) or the error text.
async fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: &Creds,
) -> Result<(String, Vec<u8>), String> {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server.server.clone());
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = ServerName::try_from("outbound_.8080_._.inventory.shop.svc.cluster.local").unwrap();
    let (cr, sr) = tokio::join!(connector.connect(name, c), acceptor.accept(s));
    let (sr, cr) = match (sr, cr) {
        (Ok(s), Ok(c)) => (s, c),
        (s, c) => {
            return Err(format!(
                "server: {:?} | client: {:?}",
                s.err().map(|e| e.to_string()),
                c.err().map(|e| e.to_string())
            ))
        }
    };
    drop(cr);
    let (_, conn) = sr.get_ref();
    let der = conn.peer_certificates().unwrap()[0].clone();
    let peer = mesh_proxy::mtls::PeerCert::from_der(&der, "cluster.local")
        .map_err(|e| format!("identity: {e}"))?;
    Ok((
        peer.identity.to_string(),
        conn.alpn_protocol().unwrap().to_vec(),
    ))
}

#[tokio::test]
async fn mesh_peers_handshake_and_bad_peers_are_refused() {
    let r1 = root("mesh");
    let r2 = root("other");
    let server = creds(&r1, SERVER, -1, 1, &[&r1]);
    let good = creds(&r1, CLIENT, -1, 1, &[&r1]);
    assert_eq!(good.identity.to_string(), CLIENT);
    let (peer, alpn) = handshake(good.client_h1.clone(), &server).await.unwrap();
    assert_eq!(peer, CLIENT);
    assert_eq!(alpn, b"istio-http/1.1");
    let (_, alpn) = handshake(good.client_h2.clone(), &server).await.unwrap();
    assert_eq!(alpn, b"istio-h2");
    let (_, alpn) = handshake(good.client_tcp.clone(), &server).await.unwrap();
    assert_eq!(alpn, b"istio");

    // A client certificate from another CA.
    let foreign = creds(&r2, CLIENT, -1, 1, &[&r1]);
    let e = handshake(foreign.client_h1.clone(), &server)
        .await
        .unwrap_err();
    assert!(
        e.contains("server: Some(\"invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
    // A server certificate from another CA: the client refuses it.
    let foreign_server = creds(&r2, SERVER, -1, 1, &[&r2]);
    let e = handshake(good.client_h1.clone(), &foreign_server)
        .await
        .unwrap_err();
    assert!(
        e.contains("client: Some(\"invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
    // An expired client certificate.
    let expired = creds(&r1, CLIENT, -3, -1, &[&r1]);
    let e = handshake(expired.client_h1.clone(), &server)
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("expired"), "{e}");
    // A foreign trust domain: the chain is fine, the identity is not ours.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(
        "spiffe://evil.example/ns/shop/sa/cart"
            .to_string()
            .try_into()
            .unwrap(),
    )];
    let evil = p.signed_by(&key, &r1.issuer).unwrap();
    assert!(build_creds(
        &[evil.pem()],
        key.serialize_der(),
        std::slice::from_ref(&r1.pem),
        "cluster.local"
    )
    .is_err());
    // What a sidecar uses to check a peer server: chain to r1, SPIFFE identity.
    let mesh_verifier = || {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                pem::parse(&r1.pem).unwrap().into_contents(),
            ))
            .unwrap();
        Arc::new(mesh_proxy::mtls::verify::MeshServerVerifier::new(
            rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap(),
            "cluster.local",
            rustls::crypto::ring::default_provider().signature_verification_algorithms,
        ))
    };
    let evil_client = Arc::new(
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(mesh_verifier())
            .with_client_auth_cert(
                vec![evil.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
    );
    let e = handshake(evil_client, &server).await.unwrap_err();
    assert!(e.contains("evil.example"), "{e}");
    // TLS 1.2 only: refused (sidecars speak TLS 1.3).
    let mut tls12 =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
            .dangerous()
            .with_custom_certificate_verifier(mesh_verifier())
            .with_no_client_auth();
    tls12.alpn_protocols = vec![b"istio-http/1.1".to_vec()];
    let e = handshake(Arc::new(tls12), &server).await.unwrap_err();
    assert!(
        e.contains("ProtocolVersion") || e.contains("protocol version"),
        "{e}"
    );

    // Root rotation: a server trusting both roots accepts clients of either.
    let both = creds(&r1, SERVER, -1, 1, &[&r1, &r2]);
    assert_eq!(both.roots, 2);
    let new_client = creds(&r2, CLIENT, -1, 1, &[&r1, &r2]);
    assert!(handshake(new_client.client_h1.clone(), &both).await.is_ok());
    assert!(handshake(good.client_h1.clone(), &both).await.is_ok());
}
