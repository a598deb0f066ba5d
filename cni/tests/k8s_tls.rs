//! The Kubernetes pod source over HTTPS, as on a real cluster: a TLS fake API server
//! (rustls, self-signed certificate for 127.0.0.1) checked against the kubeconfig's
//! CA, with the bearer token; a server whose certificate the CA did not sign is refused.

use std::time::Duration;

use base64::Engine as _;
use mesh_cni::k8s::{get_pod, K8sError, Kubeconfig};
use mesh_e2e::fake_api::{Fake, Threaded};
use serde_json::json;

/// The shared fake API server over HTTPS with `cert`, holding shop/web-0.
fn tls_server(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> (String, Threaded) {
    let fake = Fake::new();
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "shop", "annotations": {"sidecar.istio.io/status": "{}"}},
        "spec": {"containers": [{"name": "istio-proxy"}]}}));
    let api = fake.spawn_tls(cert.cert.der().to_vec(), cert.signing_key.serialize_der());
    (format!("https://{}", api.addr), api)
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
    let (url, api) = tls_server(&cert);
    let dir = tempfile::tempdir().unwrap();
    let kc = Kubeconfig::load(&kubeconfig(dir.path(), &url, &ca_pem)).unwrap();
    let pod = get_pod(&kc, "shop", "web-0", Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(pod.metadata.name, "web-0");
    assert_eq!(pod.spec.containers[0].name, "istio-proxy");
    assert_eq!(api.seen(), ["GET /api/v1/namespaces/shop/pods/web-0"]);
    assert_eq!(api.auth(), ["Bearer tok-123"]);
}

#[test]
fn https_with_a_foreign_certificate_is_refused() {
    let server_cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other_ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (url, api) = tls_server(&server_cert);
    let dir = tempfile::tempdir().unwrap();
    let kc = Kubeconfig::load(&kubeconfig(dir.path(), &url, &other_ca.cert.pem())).unwrap();
    match get_pod(&kc, "shop", "web-0", Duration::from_secs(5)) {
        Err(K8sError::Unreachable { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(api.seen().is_empty(), "{:?}", api.seen());
}
