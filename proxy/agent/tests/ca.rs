//! The mesh CA over the real sync port: a proxy's credential gets exactly its
//! own SPIFFE identity; a CSR for another identity, an unknown credential, or a
//! namespace-A credential asking for namespace B is refused with a reason.
//! The port speaks TLS 1.3 with a certificate the agent issued itself; a
//! plaintext client, a client expecting another name or trusting other roots
//! gets nothing, and the plaintext config-only port refuses CSRs.

mod common;

use mesh_agent::client::{request_certificate, Transport};
use mesh_agent::config::Config;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn config(dir: &Path, tokens: &Path) -> Config {
    Config::from_flags([
        "--config-dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--plaintext-listen",
        "127.0.0.1:0",
        "--debug-listen",
        "127.0.0.1:0",
        "--agent-name",
        "ca-test",
        "--debounce-ms",
        "10",
        "--ca-tokens",
        tokens.to_str().unwrap(),
        "--ca-root-out",
        dir.join("root-cert.pem").to_str().unwrap(),
        "--server-san",
        "ca.example.internal",
    ])
    .unwrap()
}

fn tls_to(root_file: &Path) -> Transport {
    Transport::Tls {
        root_file: root_file.to_path_buf(),
        server_name: mesh_api::identity::ISTIOD_SERVER_NAME.into(),
    }
}

fn csr(sans: &[&str]) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = sans
        .iter()
        .map(|s| rcgen::SanType::URI(s.to_string().try_into().unwrap()))
        .collect();
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn uris(pem_text: &str) -> Vec<String> {
    let p = pem::parse(pem_text).unwrap();
    let (_, cert) = X509Certificate::from_der(p.contents()).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn ca_issues_only_the_proven_identity() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "tok-a shop cart\ntok-b bank teller\n").unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\n\
         spec: {serviceAccountName: cart, containers: [{name: c, image: c}]}\n",
    )
    .unwrap();
    let cfg = config(&config_dir, &tokens);
    let shutdown = CancellationToken::new();
    let agent = common::start_files_agent(&cfg, &config_dir, &shutdown).await;
    let addr = agent.sync_addr.to_string();
    let ttl = Duration::from_secs(3600);
    let tls = tls_to(&config_dir.join("root-cert.pem"));

    // Own credential, no SAN asked: the identity the credential proves.
    let ok = request_certificate(&addr, &tls, "tok-a", &csr(&[]), ttl)
        .await
        .unwrap();
    assert_eq!(
        uris(&ok.chain[0]),
        ["spiffe://cluster.local/ns/shop/sa/cart"]
    );
    let published = std::fs::read_to_string(config_dir.join("root-cert.pem")).unwrap();
    assert_eq!(ok.roots, vec![published]);
    // Asking for its own identity explicitly is fine.
    let own = "spiffe://cluster.local/ns/shop/sa/cart";
    assert!(request_certificate(&addr, &tls, "tok-a", &csr(&[own]), ttl)
        .await
        .is_ok());

    // Another service account's identity: refused, naming both.
    let other = "spiffe://cluster.local/ns/bank/sa/teller";
    let e = request_certificate(&addr, &tls, "tok-a", &csr(&[other]), ttl)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(other) && e.contains(own), "{e}");
    // Refused, each with a message naming why: namespace A's credential asking
    // for an identity in namespace B, an unknown or empty credential, garbage
    // instead of a CSR.
    let garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    for (token, request, why) in [
        (
            "tok-a",
            csr(&["spiffe://cluster.local/ns/bank/sa/cart"]),
            "ns/bank/sa/cart",
        ),
        ("tok-z", csr(&[]), "authentication failed"),
        ("", csr(&[]), "no credential"),
        ("tok-b", garbage.to_string(), "PKCS#10"),
    ] {
        let e = request_certificate(&addr, &tls, token, &request, ttl)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{token:?}: {e}");
    }
    // The CA keeps serving after all that.
    let ok = request_certificate(&addr, &tls, "tok-b", &csr(&[]), ttl)
        .await
        .unwrap();
    assert_eq!(uris(&ok.chain[0]), [other]);

    // 15012 is TLS: a plaintext client gets no answer it can use.
    let e = request_certificate(&addr, &Transport::Plaintext, "tok-b", &csr(&[]), ttl)
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("BEGIN CERTIFICATE"), "{e}");
    // Another expected name, or other roots: the handshake fails, the token is not sent.
    let wrong_name = Transport::Tls {
        root_file: config_dir.join("root-cert.pem"),
        server_name: "evil.example.com".into(),
    };
    let e = request_certificate(&addr, &wrong_name, "tok-b", &csr(&[]), ttl)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("evil.example.com") && e.contains("TLS"), "{e}");
    let other_ca = mesh_agent::ca::Ca::self_signed("cluster.local", ttl).unwrap();
    let other_roots = dir.path().join("other-root.pem");
    other_ca.publish(&other_roots).unwrap();
    let e = request_certificate(&addr, &tls_to(&other_roots), "tok-b", &csr(&[]), ttl)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("other-root.pem"), "{e}");
    let e = request_certificate(
        &addr,
        &tls_to(&dir.path().join("nope.pem")),
        "tok-b",
        &csr(&[]),
        ttl,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope.pem"), "{e}");
    // The serving certificate carries the istiod names and the extra SAN.
    let sans = agent.tls.as_ref().unwrap().sans().to_vec();
    assert!(
        sans.contains(&"mesh-agent.istio-system.svc".to_string()),
        "{sans:?}"
    );
    assert!(
        sans.contains(&"ca.example.internal".to_string()),
        "{sans:?}"
    );
    let by_extra = Transport::Tls {
        root_file: config_dir.join("root-cert.pem"),
        server_name: "ca.example.internal".into(),
    };
    assert!(
        request_certificate(&addr, &by_extra, "tok-b", &csr(&[]), ttl)
            .await
            .is_ok()
    );

    // The plaintext config-only port serves views but refuses CSRs, clearly.
    let plain = agent.plaintext_addr.unwrap().to_string();
    let e = request_certificate(&plain, &Transport::Plaintext, "tok-b", &csr(&[]), ttl)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("plaintext config-only"), "{e}");
    // Pod p's proxy gets its view from both (with its token over TLS).
    let tokens_of_p = dir.path().join("token-p");
    std::fs::write(&tokens_of_p, "tok-a\n").unwrap();
    for (addr, transport) in [(plain, Transport::Plaintext), (addr.clone(), tls.clone())] {
        let mut cfg = mesh_agent::client::ClientConfig::new(
            addr,
            mesh_api::syncapi::ProxyIdentity {
                pod: "p".into(),
                namespace: "shop".into(),
                ..Default::default()
            },
        );
        cfg.transport = transport;
        cfg.token_file = Some(tokens_of_p.clone());
        let mut state = mesh_agent::client::spawn(
            cfg,
            |_: &mesh_api::syncapi::ProxyView| Ok(()),
            shutdown.clone(),
        );
        tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| s.current.is_some()),
        )
        .await
        .expect("a view within 10s")
        .unwrap();
    }
    shutdown.cancel();
}

#[tokio::test]
async fn kubernetes_mode_reviews_service_account_tokens() {
    let fake = mesh_e2e::fake_api::Fake::new();
    fake.sa_token("sa-token-cart", "shop", "cart");
    // A token minted for another audience (e.g. the default API audience).
    fake.token_status(
        "api-audience-token",
        serde_json::json!({"authenticated": true,
            "user": {"username": "system:serviceaccount:shop:cart"},
            "audiences": ["https://kubernetes.default.svc"]}),
    );
    fake.token_status(
        "user-token",
        serde_json::json!({"authenticated": true, "user": {"username": "alice@example.com"}}),
    );
    let shutdown = CancellationToken::new();
    let client = fake.serve(shutdown.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &dir.path().join("unused"));
    cfg.ca.ca_tokens = None;
    let ca = mesh_agent::agent::ca_service(&cfg, Some(client)).unwrap();
    assert!(ca.is_some(), "Kubernetes mode always runs the CA");
    let source = Box::new(mesh_agent::source::files::FilesSource {
        dir: dir.path().to_path_buf(),
        debounce: Duration::from_millis(10),
    });
    let agent = mesh_agent::agent::start_with_ca(&cfg, source, ca, shutdown.clone())
        .await
        .unwrap();
    let addr = agent.sync_addr.to_string();
    let ttl = Duration::from_secs(600);
    let tls = tls_to(&dir.path().join("root-cert.pem"));

    let ok = request_certificate(&addr, &tls, "sa-token-cart", &csr(&[]), ttl)
        .await
        .unwrap();
    assert_eq!(
        uris(&ok.chain[0]),
        ["spiffe://cluster.local/ns/shop/sa/cart"]
    );
    // The token's namespace bounds the identity: shop's token gets nothing in bank.
    let e = request_certificate(
        &addr,
        &tls,
        "sa-token-cart",
        &csr(&["spiffe://cluster.local/ns/bank/sa/cart"]),
        ttl,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("ns/bank/sa/cart"), "{e}");
    for (token, why) in [
        ("forged", "not authenticated"),
        ("api-audience-token", "istio-ca"),
        ("user-token", "not a service account"),
    ] {
        let e = request_certificate(&addr, &tls, token, &csr(&[]), ttl)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{token}: {e}");
    }
    assert_eq!(fake.db().reviews, 5);
    shutdown.cancel();
}
