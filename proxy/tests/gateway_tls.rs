//! `mesh-proxy router` terminating and passing through TLS, checked with
//! real clients (curl `--resolve`/`--cacert`, `openssl s_client`): two HTTPS
//! hosts on one port with certificates from two CAs chosen by SNI, no
//! certificate for an unknown SNI, a server with a TLS error serving nothing
//! while its neighbours serve, certificate rotation under a curl loop with no
//! failed request, MUTUAL / OPTIONAL_MUTUAL client certificates (with
//! subjectAltNames), PASSTHROUGH by SNI to a TLS server, and a config dump
//! that shows serials but never key bytes.

mod common;
mod gwfix;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use gwfix::*;
use mesh_e2e::testca::TestCa;

const WEB: &str = "hosts: [a.example.com, b.example.com, c.example.com, m.example.com, o.example.com]\ngateways: [istio-system/ingress]\nhttp:\n- route: [{destination: {host: echo, port: {number: 8080}}}]\n";

fn serial(pem_text: &str) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = pem::parse(pem_text).unwrap().into_contents();
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    format!("{:x}", c.serial)
}

#[test]
fn https_hosts_by_sni_rotation_and_a_broken_server() {
    let (ca_a, ca_b) = (TestCa::new("ca-a", None), TestCa::new("ca-b", None));
    let leaf_a = ca_a.leaf("a.example.com", &["a.example.com"], false);
    let leaf_b = ca_b.leaf("b.example.com", &["b.example.com"], false);
    let mut a = server(0, "HTTPS", &["a.example.com"], &["default/web"]);
    a.tls = Some(tls("SIMPLE", "istio-system/a-cred", &leaf_a, None));
    let mut b = server(1, "HTTPS", &["b.example.com"], &["default/web"]);
    b.tls = Some(tls("SIMPLE", "istio-system/b-cred", &leaf_b, None));
    let mut c = server(2, "HTTPS", &["c.example.com"], &["default/web"]);
    c.tls = Some(mesh_api::gatewayview::GatewayTls {
        mode: "SIMPLE".into(),
        error: Some("Secret istio-system/c-cred not found".into()),
        ..Default::default()
    });
    let mut w = gw_world(vec![listener(8443, 443, vec![a, b, c])], &[("default/web", WEB)]);
    let cacert_a = w.file("ca-a.pem", &ca_a.pem);
    let cacert_b = w.file("ca-b.pem", &ca_b.pem);

    assert_eq!(w.https("a.example.com", 8443, "/", &["--cacert", &cacert_a]).0, "200");
    assert_eq!(w.https("b.example.com", 8443, "/", &["--cacert", &cacert_b]).0, "200");
    // a's certificate is not b's CA's: verification fails (curl 60).
    assert_eq!(w.https("a.example.com", 8443, "/", &["--cacert", &cacert_b]).1, 60);
    // The broken server serves nothing; the others keep serving.
    let (code, exit) = w.https("c.example.com", 8443, "/", &["--cacert", &cacert_a]);
    assert_eq!(code, "000");
    assert_ne!(exit, 0);

    let shown = w.s_client(8443, "b.example.com");
    assert!(shown.contains("CN = b.example.com") || shown.contains("CN=b.example.com"), "{shown}");
    let unknown = w.s_client(8443, "zzz.example.com");
    assert!(unknown.contains("no peer certificate available"), "{unknown}");

    // The dump shows the certificates' serials, never key bytes.
    let dump = w.dump_text();
    let key_line = leaf_a.key_pem.lines().nth(1).unwrap();
    assert!(!dump.contains(key_line), "key bytes in the config dump");
    assert!(!dump.contains("BEGIN PRIVATE KEY"), "key in the config dump");
    let secrets = &w.dump()["compiled"]["secrets"];
    assert!(secrets.to_string().contains(&serial(&leaf_a.cert_pem)), "{secrets}");
    assert!(secrets.to_string().contains("istio-system/b-cred"), "{secrets}");

    // Rotation of a's certificate under a curl loop: no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let looper = {
        let (client, ip, ca) = (w.client.exec(0, &["true"]).map(|_| ()), w.ip(), cacert_a.clone());
        client.unwrap();
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let netns = w.client.netns().to_string();
        std::thread::spawn(move || {
            let resolve = format!("a.example.com:8443:{ip}");
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &netns, "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}"])
                    .args(["--resolve", &resolve, "--cacert", &ca, "https://a.example.com:8443/loop"])
                    .output()
                    .unwrap();
                if out.stdout == b"200" {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let wait_ok = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while ok.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "curl loop stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_ok(10);
    let leaf_a2 = ca_a.leaf("a.example.com", &["a.example.com"], false);
    w.update(|g| {
        g.listeners[0].servers[0].tls = Some(tls("SIMPLE", "istio-system/a-cred", &leaf_a2, None));
    });
    let at = ok.load(Ordering::Relaxed);
    wait_ok(at + 10);
    stop.store(true, Ordering::Relaxed);
    looper.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during rotation");
    let shown = w.s_client(8443, "a.example.com");
    let script = format!(
        "openssl s_client -connect {}:8443 -servername a.example.com </dev/null 2>/dev/null | openssl x509 -noout -serial",
        w.ip()
    );
    let out = w.client.exec(APP, &["timeout", "5", "sh", "-c", &script]).unwrap();
    let served = String::from_utf8_lossy(&out.stdout).trim().to_ascii_lowercase();
    assert_eq!(
        served.trim_start_matches("serial=").trim_start_matches('0'),
        serial(&leaf_a2.cert_pem).trim_start_matches('0'),
        "{shown}"
    );
}

#[test]
fn mutual_optional_mutual_and_passthrough() {
    let server_ca = TestCa::new("server-ca", None);
    let client_ca = TestCa::new("client-ca", None);
    let other_ca = TestCa::new("other-ca", None);
    let leaf = server_ca.leaf("gw", &["m.example.com", "o.example.com", "secure.example.com"], false);
    let good = client_ca.leaf("client", &["client.example.com"], true);
    let intruder = client_ca.leaf("intruder", &["intruder.example.com"], true);
    let bad = other_ca.leaf("client", &["client.example.com"], true);
    let mut m = server(0, "HTTPS", &["m.example.com"], &["default/web"]);
    let mut mt = tls("MUTUAL", "istio-system/m-cred", &leaf, Some(&client_ca.pem));
    mt.subject_alt_names = vec!["client.example.com".into()];
    m.tls = Some(mt);
    let mut o = server(1, "HTTPS", &["o.example.com"], &["default/web"]);
    o.tls = Some(tls("OPTIONAL_MUTUAL", "istio-system/o-cred", &leaf, Some(&client_ca.pem)));
    let mut p = server(2, "TLS", &["secure.example.com"], &["default/secure"]);
    p.tls = Some(mesh_api::gatewayview::GatewayTls {
        mode: "PASSTHROUGH".into(),
        ..Default::default()
    });
    let w = gw_world(
        vec![listener(8443, 443, vec![m, o, p])],
        &[
            ("default/web", WEB),
            ("default/secure", "hosts: [secure.example.com]\ngateways: [istio-system/ingress]\ntls:\n- match: [{sniHosts: [secure.example.com], port: 443}]\n  route: [{destination: {host: secure, port: {number: 9443}}}]\n"),
        ],
    );
    let ca = w.file("server-ca.pem", &server_ca.pem);
    let files = |name: &str, l: &mesh_e2e::testca::Leaf| {
        (w.file(&format!("{name}.crt"), &l.cert_pem), w.file(&format!("{name}.key"), &l.key_pem))
    };
    // The key files are read by curl as the app user.
    let (good_c, good_k) = files("good", &good);
    let (bad_c, bad_k) = files("bad", &bad);
    let (int_c, int_k) = files("intruder", &intruder);
    let with = |c: &str, k: &str| vec!["--cacert".to_string(), ca.clone(), "--cert".into(), c.to_string(), "--key".into(), k.to_string()];
    let call = |host: &str, args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        w.https(host, 8443, "/", &a).0
    };
    let plain = vec!["--cacert".to_string(), ca.clone()];
    assert_eq!(call("m.example.com", with(&good_c, &good_k)), "200");
    assert_eq!(call("m.example.com", with(&bad_c, &bad_k)), "000");
    assert_eq!(call("m.example.com", with(&int_c, &int_k)), "000");
    assert_eq!(call("m.example.com", plain.clone()), "000");
    assert_eq!(call("o.example.com", plain.clone()), "200");
    assert_eq!(call("o.example.com", with(&good_c, &good_k)), "200");
    assert_eq!(call("o.example.com", with(&bad_c, &bad_k)), "000");
    assert!(counter(&w.metrics(), "mesh_gateway_tls_handshake_failures_total") >= 4.0);

    // PASSTHROUGH: the app's own TLS server answers, with its certificate.
    let (crt, key) = files("secure", &leaf);
    let mut s_server = w
        .app
        .spawn(APP, &["openssl", "s_server", "-accept", "9443", "-cert", &crt, "-key", &key, "-www"])
        .unwrap();
    s_server.wait_for_line("ACCEPT", Duration::from_secs(5)).unwrap();
    assert_eq!(w.https("secure.example.com", 8443, "/", &["--cacert", &ca]).0, "200");
    let m = w.metrics();
    assert!(
        metric_sum(&m, "istio_tcp_connections_opened_total", &["destination_service=\"secure.default.svc.cluster.local\""]) >= 1.0,
        "{m}"
    );
}
