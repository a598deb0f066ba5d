//! The Kubernetes pod source over HTTPS, as on a real cluster: a TLS fake API server
//! (rustls, self-signed certificate for 127.0.0.1) checked against the kubeconfig's
//! CA, with the bearer token; a server whose certificate the CA did not sign is refused.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use mesh_cni::k8s::{get_pod, K8sError, Kubeconfig};

fn tls_server(
    cert: rcgen::CertifiedKey<rcgen::KeyPair>,
    requests: usize,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let cfg = Arc::new(cfg);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}", l.local_addr().unwrap().port());
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..requests {
            let (tcp, _) = l.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = vec![0u8; 4096];
            let n = match s.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    seen.push(format!("tls error: {e}"));
                    continue;
                }
            };
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = r#"{"metadata":{"name":"web-0","namespace":"shop","annotations":{"sidecar.istio.io/status":"{}"}},"spec":{"containers":[{"name":"istio-proxy"}]}}"#;
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            s.conn.send_close_notify();
            let _ = s.flush();
            seen.push(req);
        }
        seen
    });
    (url, h)
}

fn kubeconfig(dir: &std::path::Path, server: &str, ca_pem: &str) -> std::path::PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = mesh_cni::install::kubeconfig_text(server, ca_pem.as_bytes(), "tok-123");
    assert!(text.contains(&ca));
    let p = dir.join("kc");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn https_with_the_kubeconfig_ca_and_token() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca_pem = cert.cert.pem();
    let (url, h) = tls_server(cert, 1);
    let dir = tempfile::tempdir().unwrap();
    let kc = Kubeconfig::load(&kubeconfig(dir.path(), &url, &ca_pem)).unwrap();
    let pod = get_pod(&kc, "shop", "web-0", Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(pod.metadata.name, "web-0");
    assert_eq!(pod.spec.containers[0].name, "istio-proxy");
    let reqs = h.join().unwrap();
    assert!(
        reqs[0].starts_with("GET /api/v1/namespaces/shop/pods/web-0 "),
        "{reqs:?}"
    );
    assert!(reqs[0].contains("Authorization: Bearer tok-123\r\n"));
}

#[test]
fn https_with_a_foreign_certificate_is_refused() {
    let server_cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other_ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (url, h) = tls_server(server_cert, 1);
    let dir = tempfile::tempdir().unwrap();
    let kc = Kubeconfig::load(&kubeconfig(dir.path(), &url, &other_ca.cert.pem())).unwrap();
    match get_pod(&kc, "shop", "web-0", Duration::from_secs(5)) {
        Err(K8sError::Unreachable { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    let _ = h.join();
}
