//! Gateway server credentials from `credentialName` Secrets: read only from the
//! gateway pod's namespace, both key spellings, `data` and `stringData`, the
//! MUTUAL CA (and the `-cacert` Secret winning), and bad material (no key, a PEM
//! that does not parse, a key of another certificate) disabling only its server
//! with one precise message that never carries key bytes.

mod common;

use common::{secret, store};
use mesh_agent::compile::{compile, Settings, Snapshot};
use mesh_agent::view;
use mesh_api::syncapi::{GatewayTls, GatewayView, ProxyIdentity};
use mesh_e2e::testca::TestCa;
use std::sync::Arc;

const GATEWAY: &str = include_str!("fixtures/gateway.yaml");

const MTLS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mtls, namespace: istio-system}
spec:
  selector: {istio: mtls}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["m.example.com"]
    tls: {mode: MUTUAL, credentialName: mcred}
  - port: {number: 444, name: https-opt, protocol: HTTPS}
    hosts: ["o.example.com"]
    tls: {mode: OPTIONAL_MUTUAL, credentialName: ocred}
"#;

fn snap(secrets: &[String]) -> Snapshot {
    snap_at(secrets, 5)
}

fn snap_at(secrets: &[String], version: u64) -> Snapshot {
    let joined = secrets.join("\n---\n");
    let s = compile(
        &store(&[
            ("gateway.yaml", GATEWAY),
            ("mtls.yaml", MTLS),
            ("secrets.yaml", &joined),
        ]),
        &Arc::new(Settings::default()),
        version,
    );
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    s
}

fn router(ns: &str, istio: &str) -> ProxyIdentity {
    ProxyIdentity {
        pod: "gw-1".into(),
        namespace: ns.into(),
        service_account: "gw".into(),
        labels: [("istio".to_string(), istio.to_string())].into(),
        ips: vec![],
        router: true,
    }
}

fn gateway(s: &Snapshot, ns: &str, istio: &str) -> GatewayView {
    view::build(s, &router(ns, istio)).gateway.unwrap()
}

fn tls(v: &GatewayView, gw: &str, index: usize) -> GatewayTls {
    v.listeners
        .iter()
        .flat_map(|l| &l.servers)
        .find(|s| s.gateway == gw && s.index == index)
        .and_then(|s| s.tls.clone())
        .unwrap_or_else(|| panic!("no TLS for {gw} servers[{index}]"))
}

/// The body line of a PEM (no markers): what must never leak.
fn body(pem: &str) -> &str {
    pem.lines().nth(1).unwrap()
}

#[test]
fn credentials_come_from_the_gateway_pods_namespace_only() {
    let ca = TestCa::new("gw-ca", None);
    let a = ca.leaf("bookinfo", &["bookinfo.example.com"], false);
    let b = ca.leaf("shop", &["*.shop.example.com"], false);
    let s = snap(&[
        secret(
            "istio-system",
            "cred",
            &[("tls.crt", &a.cert_pem), ("tls.key", &a.key_pem)],
            false,
        ),
        // Istio's generic keys, delivered as stringData (files source).
        secret(
            "istio-system",
            "shop-cred",
            &[("cert", &b.cert_pem), ("key", &b.key_pem)],
            true,
        ),
    ]);
    let v = gateway(&s, "istio-system", "ingressgateway");
    let one = tls(&v, "istio-system/gw", 1);
    let c = one.credential.as_ref().unwrap();
    assert_eq!(
        (one.error.as_ref(), c.source.as_str()),
        (None, "istio-system/cred")
    );
    assert_eq!(
        (c.cert_chain.as_str(), c.private_key.as_str()),
        (a.cert_pem.as_str(), a.key_pem.as_str())
    );
    assert_eq!(c.ca_certificates, None, "SIMPLE sends no client CA");
    let two = tls(&v, "istio-system/gw", 2);
    assert_eq!(two.credential.as_ref().unwrap().cert_chain, b.cert_pem);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);

    // A gateway pod in `edge` selected by the same Gateway never receives
    // istio-system's Secret.
    let e = gateway(&s, "edge", "ingressgateway");
    let one = tls(&e, "istio-system/gw", 1);
    assert_eq!(one.credential, None);
    assert_eq!(
        one.error.as_deref(),
        Some("istio-system/gw servers[1]: secret edge/cred not found in the gateway's namespace")
    );
    assert!(e.warnings.contains(one.error.as_ref().unwrap()));
    // The secrets' Debug form shows sizes, not bytes.
    let dbg = format!(
        "{:?} {:?}",
        s.secrets,
        store(&[(
            "s.yaml",
            &secret("istio-system", "cred", &[("tls.key", &a.key_pem)], false)
        )])
    );
    assert!(!dbg.contains(body(&a.key_pem)), "{dbg}");
    assert!(dbg.contains("bytes"), "{dbg}");
}

#[test]
fn bad_material_disables_only_its_server_with_one_precise_message() {
    let ca = TestCa::new("gw-ca", None);
    let a = ca.leaf("bookinfo", &["bookinfo.example.com"], false);
    let other = ca.leaf("other", &["other.example.com"], false);
    let good_shop = secret(
        "istio-system",
        "shop-cred",
        &[("tls.crt", &a.cert_pem), ("tls.key", &a.key_pem)],
        false,
    );
    let garbled = a.cert_pem.replacen(body(&a.cert_pem), "AAAA", 1);
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("tls.crt", &a.cert_pem)],
            r#"secret istio-system/cred has no "tls.key""#,
        ),
        (
            &[("tls.crt", "hello"), ("tls.key", &a.key_pem)],
            r#"secret istio-system/cred key "tls.crt" is not PEM certificates: no "CERTIFICATE" PEM block"#,
        ),
        (
            &[("tls.crt", &garbled), ("tls.key", &a.key_pem)],
            r#"secret istio-system/cred key "tls.crt" is not PEM certificates: certificate 0 does not parse"#,
        ),
        (
            &[
                ("tls.crt", &a.cert_pem),
                (
                    "tls.key",
                    "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
                ),
            ],
            r#"secret istio-system/cred key "tls.key" is not a usable PEM private key"#,
        ),
        (
            &[("tls.crt", &a.cert_pem), ("tls.key", &other.key_pem)],
            "secret istio-system/cred: the private key does not match the certificate",
        ),
    ];
    for (keys, want) in cases {
        let s = snap(&[
            secret("istio-system", "cred", keys, false),
            good_shop.clone(),
        ]);
        let v = gateway(&s, "istio-system", "ingressgateway");
        let one = tls(&v, "istio-system/gw", 1);
        let err = one.error.clone().unwrap_or_default();
        assert!(
            err.starts_with(&format!("istio-system/gw servers[1]: {want}")),
            "{err}\nwant {want}"
        );
        assert_eq!(one.credential, None);
        assert_eq!(
            v.warnings,
            std::slice::from_ref(&err),
            "one line for the one broken server"
        );
        assert!(!err.contains(body(&a.key_pem)) && !err.contains(body(&other.key_pem)));
        // The other HTTPS server still serves.
        let two = tls(&v, "istio-system/gw", 2);
        assert_eq!((two.error, two.credential.is_some()), (None, true));
    }
    // No Secret at all.
    let s = snap(&[good_shop]);
    let v = gateway(&s, "istio-system", "ingressgateway");
    assert_eq!(
        tls(&v, "istio-system/gw", 1).error.as_deref(),
        Some("istio-system/gw servers[1]: secret istio-system/cred not found in the gateway's namespace")
    );
}

#[test]
fn mutual_needs_a_client_ca_and_the_cacert_secret_wins() {
    let ca = TestCa::new("gw-ca", None);
    let clients = TestCa::new("clients", None);
    let other_clients = TestCa::new("other-clients", None);
    let m = ca.leaf("m", &["m.example.com"], false);
    let kp = |extra: &[(&'static str, &str)]| {
        let mut v: Vec<(&str, String)> = vec![
            ("tls.crt", m.cert_pem.clone()),
            ("tls.key", m.key_pem.clone()),
        ];
        v.extend(extra.iter().map(|(k, x)| (*k, x.to_string())));
        v
    };
    let refs = |v: &[(&str, String)]| -> Vec<(String, String)> {
        v.iter().map(|(k, x)| (k.to_string(), x.clone())).collect()
    };
    let mk = |ns: &str, name: &str, v: Vec<(String, String)>| {
        let r: Vec<(&str, &str)> = v.iter().map(|(k, x)| (k.as_str(), x.as_str())).collect();
        secret(ns, name, &r, false)
    };
    // MUTUAL without CA: an error; OPTIONAL_MUTUAL with `cacert` and a CRL.
    let s = snap(&[
        mk("istio-system", "mcred", refs(&kp(&[]))),
        mk(
            "istio-system",
            "ocred",
            refs(&kp(&[("cacert", &clients.pem), ("ca.crl", "CRL")])),
        ),
    ]);
    let v = gateway(&s, "istio-system", "mtls");
    assert_eq!(
        tls(&v, "istio-system/mtls", 0).error.as_deref(),
        Some(
            r#"istio-system/mtls servers[0]: mode MUTUAL needs a client CA: secret istio-system/mcred has no "ca.crt" or "cacert" and there is no secret istio-system/mcred-cacert"#
        )
    );
    let o = tls(&v, "istio-system/mtls", 1);
    assert_eq!(o.mode, "OPTIONAL_MUTUAL");
    let c = o.credential.unwrap();
    assert_eq!(
        (c.ca_certificates.as_deref(), c.ca_crl.as_deref()),
        (Some(clients.pem.as_str()), Some("CRL"))
    );

    // `mcred-cacert` wins over the CA inside `mcred`.
    let s = snap(&[
        mk(
            "istio-system",
            "mcred",
            refs(&kp(&[("ca.crt", &other_clients.pem)])),
        ),
        mk(
            "istio-system",
            "mcred-cacert",
            refs(&[("ca.crt", clients.pem.clone())]),
        ),
    ]);
    let v = gateway(&s, "istio-system", "mtls");
    let mt = tls(&v, "istio-system/mtls", 0);
    let c = mt.credential.unwrap();
    assert_eq!(c.source, "istio-system/mcred, istio-system/mcred-cacert");
    assert_eq!(c.ca_certificates.as_deref(), Some(clients.pem.as_str()));
}

/// Log output captured from the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_broken_credential_is_logged_once_per_change_without_key_bytes() {
    let ca = TestCa::new("gw-ca", None);
    let a = ca.leaf("bookinfo", &["bookinfo.example.com"], false);
    let shop = secret(
        "istio-system",
        "shop-cred",
        &[("tls.crt", &a.cert_pem), ("tls.key", &a.key_pem)],
        false,
    );
    let broken = secret("istio-system", "cred", &[("tls.crt", &a.cert_pem)], false);
    let fixed = secret(
        "istio-system",
        "cred",
        &[("tls.crt", &a.cert_pem), ("tls.key", &a.key_pem)],
        false,
    );
    let out = Captured::default();
    let w = out.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    let cache = mesh_agent::server::stream::ViewCache::default();
    let id = router("istio-system", "ingressgateway");
    tracing::subscriber::with_default(sub, || {
        for (v, secrets) in [
            (10, [&broken, &shop]),
            (11, [&broken, &shop]),
            (12, [&fixed, &shop]),
        ] {
            let s = snap_at(&[secrets[0].clone(), secrets[1].clone()], v);
            // Two proxies of the same scope, one computation.
            let w1 = cache.get(&s, &id, true, &Default::default()).warnings;
            let w2 = cache.get(&s, &id, true, &Default::default()).warnings;
            assert_eq!(w1, w2);
            assert_eq!(w1.is_empty(), v == 12);
        }
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("gateway server disabled").count(), 1, "{text}");
    assert!(
        text.contains(r#"secret istio-system/cred has no "tls.key""#),
        "{text}"
    );
    assert_eq!(
        text.matches("gateway problem resolved").count(),
        1,
        "{text}"
    );
    assert!(!text.contains(body(&a.key_pem)), "{text}");
}
