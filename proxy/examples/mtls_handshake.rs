//! Hand-run benchmark of the sidecar mTLS handshake cost: N sequential new
//! connections over loopback, plaintext vs mTLS (TLS 1.3, ECDSA P-256 workload
//! certificates from the mesh CA, client certificate verified against the
//! roots, SPIFFE identity extracted), on one thread that runs both ends. Prints
//! connections per second and the per-handshake cost.
//!
//! `cargo run --release -p mesh-proxy --example mtls_handshake -- 2000`

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_agent::ca::Ca;
use mesh_proxy::mtls::certs::{build_creds, Creds};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn creds(ca: &Ca, ns: &str, sa: &str) -> Creds {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let id = mesh_api::Identity::new("cluster.local", ns, sa).unwrap();
    let issued = ca.sign(&csr, &id, Duration::from_secs(3600)).unwrap();
    build_creds(
        &issued.chain,
        key.serialize_der(),
        &issued.roots,
        "cluster.local",
    )
    .unwrap()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ca = Ca::self_signed("cluster.local", Duration::from_secs(86400)).unwrap();
        let server = Arc::new(creds(&ca, "default", "server"));
        let client = creds(&ca, "default", "client");
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (pa, ta) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = plain.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).await.is_ok() {
                        let _ = s.write_all(&b).await;
                    }
                });
            }
        });
        let srv = server.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(srv.server.clone());
            loop {
                let (s, _) = tls.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut t) = acceptor.accept(s).await {
                        let der = t.get_ref().1.peer_certificates().unwrap()[0].clone();
                        mesh_proxy::mtls::PeerCert::from_der(&der, "cluster.local").unwrap();
                        let mut b = [0u8; 1];
                        if t.read_exact(&mut b).await.is_ok() {
                            let _ = t.write_all(&b).await;
                            let _ = t.flush().await;
                        }
                    }
                });
            }
        });
        let t0 = Instant::now();
        for _ in 0..n {
            let mut s = TcpStream::connect(pa).await.unwrap();
            s.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
        }
        let plain_t = t0.elapsed();
        let connector = tokio_rustls::TlsConnector::from(client.client_h1.clone());
        let name =
            ServerName::try_from("outbound_.8080_._.server.default.svc.cluster.local").unwrap();
        let t0 = Instant::now();
        for _ in 0..n {
            let s = TcpStream::connect(ta).await.unwrap();
            let mut t = connector.connect(name.clone(), s).await.unwrap();
            t.write_all(b"x").await.unwrap();
            t.flush().await.unwrap();
            let mut b = [0u8; 1];
            t.read_exact(&mut b).await.unwrap();
        }
        let tls_t = t0.elapsed();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        println!("connections: {n} sequential, one thread running client and server");
        println!(
            "plaintext: {:.0} conn/s ({:.1} us each)",
            n as f64 / plain_t.as_secs_f64(),
            per(plain_t)
        );
        println!(
            "mTLS 1.3 : {:.0} conn/s ({:.1} us each; handshake cost ~{:.1} us for both ends)",
            n as f64 / tls_t.as_secs_f64(),
            per(tls_t),
            per(tls_t) - per(plain_t)
        );
    });
}
