//! CSR validation and signing, cacerts loading, local credentials.

use super::auth::{lookup, AuthError};
use super::*;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa).unwrap()
}

fn csr(sans: &[SanType], ca: bool) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans.to_vec();
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.to_string().try_into().unwrap())
}

fn leaf_uris(pem_text: &str) -> Vec<String> {
    let p = ::pem::parse(pem_text).unwrap();
    let (_, cert) = X509Certificate::from_der(p.contents()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|g| match g {
            GeneralName::URI(u) => u.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn signs_exactly_the_proven_identity() {
    let ca = Ca::self_signed("cluster.local", Duration::from_secs(3600)).unwrap();
    let me = id("shop", "cart");
    // No SAN asked: the proven identity is issued.
    let issued = ca
        .sign(&csr(&[], false), &me, Duration::from_secs(60))
        .unwrap();
    assert_eq!(issued.chain.len(), 2);
    assert_eq!(leaf_uris(&issued.chain[0]), vec![me.to_string()]);
    // Asking for its own identity is fine too.
    let issued = ca
        .sign(
            &csr(&[uri(&me.to_string())], false),
            &me,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(leaf_uris(&issued.chain[0]), vec![me.to_string()]);
    // The TTL is capped by the CA's maximum.
    let p = ::pem::parse(&issued.chain[0]).unwrap();
    let (_, cert) = X509Certificate::from_der(p.contents()).unwrap();
    let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!((100..=130).contains(&life), "{life}");
    let issued = ca
        .sign(&csr(&[], false), &me, Duration::from_secs(10 * 3600))
        .unwrap();
    let p = ::pem::parse(&issued.chain[0]).unwrap();
    let (_, cert) = X509Certificate::from_der(p.contents()).unwrap();
    let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(life, 3600 + 60);
    assert!(!cert.is_ca());
}

#[test]
fn refuses_foreign_sans_and_ca_requests() {
    let ca = Ca::self_signed("cluster.local", Duration::from_secs(3600)).unwrap();
    let me = id("shop", "cart");
    let other = "spiffe://cluster.local/ns/bank/sa/teller";
    let e = ca
        .sign(&csr(&[uri(other)], false), &me, Duration::from_secs(60))
        .unwrap_err();
    assert!(e.to_string().contains(other), "{e}");
    assert!(e.to_string().contains("ns/shop/sa/cart"), "{e}");
    // Own identity plus a second one is still refused.
    let e = ca
        .sign(
            &csr(&[uri(&me.to_string()), uri(other)], false),
            &me,
            Duration::from_secs(60),
        )
        .unwrap_err();
    assert!(matches!(e, CaError::ForeignSan { .. }), "{e}");
    let dns = SanType::DnsName("bank.example".try_into().unwrap());
    let e = ca
        .sign(&csr(&[dns], false), &me, Duration::from_secs(60))
        .unwrap_err();
    assert!(e.to_string().contains("DNS:bank.example"), "{e}");
    let e = ca
        .sign(&csr(&[], true), &me, Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(e, CaError::CaRequested), "{e}");
    let e = ca
        .sign("not a csr", &me, Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(e, CaError::Csr(_)), "{e}");
}

#[test]
fn tampered_csr_is_refused() {
    let ca = Ca::self_signed("cluster.local", Duration::from_secs(3600)).unwrap();
    let text = csr(&[], false);
    let mut der = ::pem::parse(&text).unwrap().into_contents();
    // Flip a bit inside the signed request info: the signature no longer matches.
    let i = der.len() / 3;
    der[i] ^= 0x01;
    let bad = ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", der));
    assert!(ca
        .sign(&bad, &id("a", "b"), Duration::from_secs(60))
        .is_err());
}

#[test]
fn loads_an_istio_cacerts_folder_with_two_roots() {
    let dir = tempfile::tempdir().unwrap();
    let old = Ca::self_signed("cluster.local", Duration::from_secs(3600)).unwrap();
    // An intermediate signed by a new root, as `cacerts` holds it.
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut rp = CertificateParams::default();
    rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    rp.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    rp.distinguished_name.push(DnType::CommonName, "new root");
    let root = rp.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(rp, root_key);
    let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ip = CertificateParams::default();
    ip.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ip.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ip.distinguished_name
        .push(DnType::CommonName, "intermediate");
    let int = ip.signed_by(&int_key, &root_issuer).unwrap();
    std::fs::write(dir.path().join("ca-cert.pem"), int.pem()).unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), int_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.path().join("root-cert.pem"),
        format!("{}{}", root.pem(), old.roots()[0]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cert-chain.pem"),
        format!("{}{}", int.pem(), root.pem()),
    )
    .unwrap();
    let ca = Ca::from_dir(dir.path(), "cluster.local", Duration::from_secs(3600)).unwrap();
    assert_eq!(ca.roots().len(), 2);
    let issued = ca
        .sign(&csr(&[], false), &id("a", "b"), Duration::from_secs(60))
        .unwrap();
    // leaf + intermediate + root
    assert_eq!(issued.chain.len(), 3);
    let p = ::pem::parse(&issued.chain[0]).unwrap();
    let (_, cert) = X509Certificate::from_der(p.contents()).unwrap();
    assert!(cert.issuer().to_string().contains("intermediate"));
    let out = dir.path().join("published.pem");
    ca.publish(&out).unwrap();
    assert_eq!(split_pem(&std::fs::read_to_string(out).unwrap()).len(), 2);
    // A missing key names the file.
    std::fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
    let e = Ca::from_dir(dir.path(), "cluster.local", Duration::from_secs(1))
        .err()
        .unwrap();
    assert!(e.to_string().contains("ca-key.pem"), "{e}");
}

#[test]
fn local_credentials() {
    let text = "# token ns sa\nt-cart shop cart\nt-teller bank teller\n";
    assert_eq!(
        lookup(text, "t-cart", "cluster.local").unwrap(),
        id("shop", "cart")
    );
    assert_eq!(
        lookup(text, "t-teller", "cluster.local").unwrap(),
        id("bank", "teller")
    );
    assert_eq!(
        lookup(text, "t-car", "cluster.local"),
        Err(AuthError::Unknown)
    );
    let e = lookup("oops\n", "x", "cluster.local").unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn token_review_users() {
    use super::auth::service_account_identity as sa;
    assert_eq!(
        sa("system:serviceaccount:shop:cart", "cluster.local").unwrap(),
        id("shop", "cart")
    );
    for bad in [
        "alice",
        "system:serviceaccount:shop",
        "system:node:n1",
        "system:serviceaccount:Shop:cart",
    ] {
        let e = sa(bad, "cluster.local").unwrap_err();
        assert!(e.to_string().contains(bad), "{e}");
    }
}
