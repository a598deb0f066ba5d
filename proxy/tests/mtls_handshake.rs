//! The sidecar TLS configs against bad peers, over real TLS 1.3 handshakes in
//! memory: a certificate from another CA, a foreign trust domain, an expired
//! certificate, TLS 1.2 only, and a root rotation (two roots trusted at once).

use std::sync::Arc;

use mesh_proxy::mtls::certs::{build_creds, Creds};
use mesh_proxy::mtls::handshake;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

fn sni() -> ServerName<'static> {
    ServerName::try_from("outbound_.8080_._.inventory.shop.svc.cluster.local").unwrap()
}

/// Runs one handshake, a rustls client against the sidecar's acceptor;
/// Ok(peer identity the server saw, ALPN) or the error text.
async fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: &Creds,
) -> Result<(String, Vec<u8>), String> {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(client);
    let (cr, sr) = tokio::join!(
        connector.connect(sni(), c),
        handshake::accept(server.server.clone(), s)
    );
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
    let (_, hello) = sr;
    let peer = mesh_proxy::mtls::PeerCert::from_der(&hello.certs[0], "cluster.local")
        .map_err(|e| format!("identity: {e}"))?;
    Ok((peer.identity.to_string(), hello.alpn.unwrap()))
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

/// Writes `data` in `chunk`-sized vectored writes (two slices each), then
/// flushes.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8], chunk: usize) {
    for c in data.chunks(chunk) {
        let (a, b) = c.split_at(c.len() / 2);
        let mut bufs = [std::io::IoSlice::new(a), std::io::IoSlice::new(b)];
        let mut bufs = &mut bufs[..];
        while !bufs.is_empty() {
            let n = w.write_vectored(bufs).await.unwrap();
            assert!(n > 0);
            std::io::IoSlice::advance_slices(&mut bufs, n);
        }
    }
    w.flush().await.unwrap();
}

async fn recv<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    tokio::time::timeout(std::time::Duration::from_secs(10), r.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("{n} bytes did not arrive in 10 s"))
        .unwrap();
    got
}

/// Server and client credentials from one mesh root.
fn mesh_pair() -> (Creds, Creds) {
    let r1 = root("mesh");
    (
        creds(&r1, SERVER, -1, 1, &[&r1]),
        creds(&r1, CLIENT, -1, 1, &[&r1]),
    )
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn sidecars_carry_data_over_their_own_records() {
    let (server, client) = mesh_pair();
    let (c, s) = tokio::io::duplex(16 * 1024);
    let (cr, sr) = tokio::join!(
        handshake::connect(client.client_h1.clone(), sni(), c),
        handshake::accept(server.server.clone(), s)
    );
    let ((mut c, to_server), (mut s, to_client)) = (cr.unwrap(), sr.unwrap());
    assert_eq!(to_server.alpn.as_deref(), Some(&b"istio-http/1.1"[..]));
    let id = |der| mesh_proxy::mtls::PeerCert::from_der(der, "cluster.local").unwrap();
    assert_eq!(id(&to_server.certs[0]).identity.to_string(), SERVER);
    assert_eq!(id(&to_client.certs[0]).identity.to_string(), CLIENT);
    // Small, one-record and many-record messages each way, concurrently (the
    // duplex holds less than the largest message).
    for (n, chunk) in [(1, 1), (1000, 1000), (200_000, 40_000), (70_000, 7)] {
        let (up, down) = (pattern(n, 1), pattern(n, 2));
        let ((), got) = tokio::join!(send(&mut c, &up, chunk), recv(&mut s, n));
        assert!(got == up, "{n} bytes client to server");
        let ((), got) = tokio::join!(send(&mut s, &down, chunk), recv(&mut c, n));
        assert!(got == down, "{n} bytes server to client");
    }
    // A clean close: close_notify reads as the end of the stream.
    c.shutdown().await.unwrap();
    assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0);
    // Half-closed: the server can still answer.
    send(&mut s, b"bye", 3).await;
    assert_eq!(recv(&mut c, 3).await, b"bye");
    s.shutdown().await.unwrap();
    assert_eq!(c.read(&mut [0u8; 8]).await.unwrap(), 0);
}

#[tokio::test]
async fn key_updates_and_tickets_from_a_rustls_peer_are_followed() {
    let (server, client) = mesh_pair();

    // Our client against rustls' server, which sends session tickets after
    // the handshake and then asks for a key update.
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server.server.clone());
    let (cr, sr) = tokio::join!(
        handshake::connect(client.client_h1.clone(), sni(), c),
        acceptor.accept(s)
    );
    let ((mut c, _), mut s) = (cr.unwrap(), sr.unwrap());
    for round in 0..3u8 {
        s.get_mut().1.refresh_traffic_keys().unwrap();
        let msg = pattern(5000, round);
        let ((), got) = tokio::join!(send(&mut s, &msg, 5000), recv(&mut c, 5000));
        assert!(
            got == msg,
            "round {round}: server to client after its key update"
        );
        // Our answer to the update request was sent under the old key, and
        // what follows under the new one: rustls reads both.
        let ((), got) = tokio::join!(send(&mut c, &msg, 1200), recv(&mut s, 5000));
        assert!(
            got == msg,
            "round {round}: client to server after our key update"
        );
    }

    // rustls' client against our server: the same, the other way round.
    let (c, s) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(client.client_h1.clone());
    let (cr, sr) = tokio::join!(
        connector.connect(sni(), c),
        handshake::accept(server.server.clone(), s)
    );
    let (mut c, (mut s, _)) = (cr.unwrap(), sr.unwrap());
    for round in 0..3u8 {
        c.get_mut().1.refresh_traffic_keys().unwrap();
        let msg = pattern(3000, round);
        let ((), got) = tokio::join!(send(&mut c, &msg, 3000), recv(&mut s, 3000));
        assert!(got == msg, "round {round}: client to server");
        let ((), got) = tokio::join!(send(&mut s, &msg, 3000), recv(&mut c, 3000));
        assert!(got == msg, "round {round}: server to client");
    }
    s.shutdown().await.unwrap();
    assert_eq!(c.read(&mut [0u8; 8]).await.unwrap(), 0);
}

#[tokio::test]
async fn forged_and_truncated_records_are_errors() {
    let (server, client) = mesh_pair();
    let pair = || async {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server.clone());
        let (cr, sr) = tokio::join!(
            handshake::connect(client.client_h1.clone(), sni(), c),
            acceptor.accept(s)
        );
        (cr.unwrap().0, sr.unwrap())
    };
    let read_err = |mut c: mesh_proxy::mtls::session::TlsConn<tokio::io::DuplexStream>| async move {
        let e = c.read(&mut [0u8; 64]).await.unwrap_err();
        (e.kind(), e.to_string())
    };

    // A record that does not decrypt.
    let (c, mut s) = pair().await;
    let mut forged = vec![23, 3, 3, 0, 40];
    forged.extend_from_slice(&[0x5a; 40]);
    s.get_mut().0.write_all(&forged).await.unwrap();
    let (kind, msg) = read_err(c).await;
    assert_eq!(kind, std::io::ErrorKind::InvalidData);
    assert!(msg.contains("bad record MAC"), "{msg}");

    // A record longer than TLS allows, refused from its header.
    let (c, mut s) = pair().await;
    s.get_mut().0.write_all(&[23, 3, 3, 0x48, 0]).await.unwrap();
    let (_, msg) = read_err(c).await;
    assert!(msg.contains("18432 bytes exceeds"), "{msg}");

    // The peer's socket closes mid-record, then without close_notify.
    let (c, mut s) = pair().await;
    s.get_mut()
        .0
        .write_all(&[23, 3, 3, 0, 40, 1, 2])
        .await
        .unwrap();
    s.get_mut().0.shutdown().await.unwrap();
    let (kind, msg) = read_err(c).await;
    assert_eq!(kind, std::io::ErrorKind::UnexpectedEof);
    assert!(msg.contains("middle of a TLS record"), "{msg}");
    let (c, mut s) = pair().await;
    s.get_mut().0.shutdown().await.unwrap();
    let (kind, msg) = read_err(c).await;
    assert_eq!(kind, std::io::ErrorKind::UnexpectedEof);
    assert!(msg.contains("without sending TLS close_notify"), "{msg}");

    // A close_notify from rustls ends the stream.
    let (c, mut s) = pair().await;
    s.get_mut().1.send_close_notify(); // queues a warning-level close_notify
    s.flush().await.unwrap();
    let mut c = c;
    assert_eq!(c.read(&mut [0u8; 8]).await.unwrap(), 0);
}

#[tokio::test]
async fn bytes_sent_right_after_the_client_finished_are_not_lost() {
    // A client writes its first bytes in the same flight as its Finished,
    // so the server reads both at once and rustls opens the data during the
    // handshake.
    let (server, client) = mesh_pair();
    let (c, s) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(client.client_tcp.clone());
    let first = pattern(3000, 7);
    let client = async {
        let mut c = connector.connect(sni(), c).await.unwrap();
        c.write_all(&first).await.unwrap();
        c.flush().await.unwrap();
        c
    };
    let (_c, sr) = tokio::join!(client, handshake::accept(server.server.clone(), s));
    let (mut s, _) = sr.unwrap();
    assert!(recv(&mut s, 3000).await == first);
}
