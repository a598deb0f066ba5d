//! Istio's ingress walkthrough on `meshctl local`, from the host: Bookinfo and
//! `bookinfo-gateway.yaml`, then `curl http://$(meshctl local service-url
//! istio-ingressgateway -n istio-system --port 80)/productpage` answered by
//! productpage and an unrouted path 404 (`NR` in the gateway's metrics); and
//! HTTPS terminated at the gateway with a `credentialName` Secret applied with
//! `meshctl local apply`, rotated by applying it again. These need a working
//! `mesh-proxy router` and the agent's Gateway compiler.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const GATEWAY: &str = "istio-system/istio-ingressgateway-0";

fn bookinfo_with_gateway() -> Local {
    let (platform, rules, gateway) = (
        sample("platform"),
        sample("networking/destination-rule-all.yaml"),
        sample("networking/bookinfo-gateway.yaml"),
    );
    Local::up(&[
        "--gateways",
        "ingress",
        "-f",
        &platform,
        "-f",
        &rules,
        "-f",
        &gateway,
    ])
}

#[test]
fn bookinfo_productpage_through_the_ingress_gateway_from_the_host() {
    let mesh = bookinfo_with_gateway();
    let addr = ingress(&mesh, "80");
    let (code, reply, err) = curl(&[&format!("http://{addr}/productpage")]);
    assert_eq!(code, 200, "{err}");
    let reply = reply.expect("productpage's echo answer");
    assert_eq!(reply.pod, "productpage-v1-0");
    assert_eq!(reply.path, "/productpage");
    // Routed by prefix too (bookinfo-gateway.yaml's /static and /api/v1/products).
    let (code, reply, _) = curl(&[&format!("http://{addr}/api/v1/products/1")]);
    assert_eq!(
        (code, reply.map(|r| r.pod)),
        (200, Some("productpage-v1-0".into()))
    );

    // An unrouted path: 404 from the gateway itself, counted with NR.
    let (code, reply, _) = curl(&[&format!("http://{addr}/reviews/0")]);
    assert_eq!(code, 404);
    assert!(reply.is_none());
    let metrics = mesh.metrics(GATEWAY);
    assert!(
        metric_sum(
            &metrics,
            "istio_requests_total",
            &["response_code=\"404\"", "response_flags=\"NR\""]
        ) >= 1.0,
        "{metrics}"
    );
    // The routed calls, with the gateway as the source workload.
    assert!(
        metric_sum(
            &metrics,
            "istio_requests_total",
            &[
                "source_workload=\"istio-ingressgateway\"",
                "destination_workload=\"productpage-v1\"",
                "response_code=\"200\"",
            ]
        ) >= 2.0,
        "{metrics}"
    );
    // Upstream from the gateway is auto-mTLS as from a sidecar: productpage's
    // own sidecar saw the gateway's proven identity over mutual TLS.
    let inbound = mesh.metrics("productpage-v1-0");
    assert!(
        metric_sum(
            &inbound,
            "istio_requests_total",
            &[
                "reporter=\"destination\"",
                "source_workload=\"istio-ingressgateway\"",
                "connection_security_policy=\"mutual_tls\"",
                "source_principal=\"spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account\"",
            ]
        ) >= 2.0,
        "{inbound}"
    );
}

fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

#[test]
fn https_at_the_gateway_with_a_secret_applied_and_rotated() {
    const HOST: &str = "bookinfo.example.com";
    let mesh = bookinfo_with_gateway();
    let (ca1, cert1, key1) = certs("ca one", HOST);
    let secret = mesh.file("secret.yaml", &tls_secret("bookinfo-cert", &cert1, &key1));
    // Waited for like the Gateway below: otherwise the Secret's own version
    // could be what the Gateway's wait sees, and curl would run before the
    // HTTPS server exists.
    let mut out = String::new();
    mesh.changed_by(&secret, &[GATEWAY], || {
        out = mesh.ok(&["apply", "-f", &secret]);
    });
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    let gw = mesh.file(
        "https.yaml",
        &format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: bookinfo-https}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [{HOST}]\n    tls: {{mode: SIMPLE, credentialName: bookinfo-cert}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bookinfo-https}}\nspec:\n  hosts: [{HOST}]\n  gateways: [bookinfo-https]\n  http:\n  - match: [{{uri: {{exact: /productpage}}}}]\n    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]\n"),
    );
    mesh.apply(&gw, &[GATEWAY]);
    let addr = ingress(&mesh, "443");
    let port = addr.rsplit(':').next().unwrap().to_string();
    let resolve = format!("{HOST}:{port}:127.0.0.1");
    let url = format!("https://{HOST}:{port}/productpage");
    let ca1_file = mesh.file("ca1.pem", &ca1);
    let (code, reply, err) = curl(&["--resolve", &resolve, "--cacert", &ca1_file, &url]);
    assert_eq!(code, 200, "{err}");
    assert_eq!(reply.unwrap().pod, "productpage-v1-0");

    // Rotation: apply the Secret with a certificate from another CA; the
    // gateway serves it without restart (bounded wait for the new chain).
    let (ca2, cert2, key2) = certs("ca two", HOST);
    let ca2_file = mesh.file("ca2.pem", &ca2);
    let rotated = mesh.file("rotated.yaml", &tls_secret("bookinfo-cert", &cert2, &key2));
    mesh.ok(&["apply", "-f", &rotated]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, _, _) = curl(&["--resolve", &resolve, "--cacert", &ca2_file, &url]);
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not served within 15s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, _) = curl(&["--resolve", &resolve, "--cacert", &ca1_file, &url]);
    assert_eq!(code, 0, "the old certificate is still served");
}

/// The production shape: a Gateway in `istio-system` redirecting 80 to HTTPS
/// and serving two hosts on 443, each with its own Secret (and CA); one
/// VirtualService in the application namespace bound with
/// `istio-system/prod-gateway`, a regex and a prefix route, CORS on the regex one.
fn prod_gateway() -> String {
    "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: prod-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shop.example.com, admin.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https-shop, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 443, name: https-admin, protocol: HTTPS}
    hosts: [admin.example.com]
    tls: {mode: SIMPLE, credentialName: admin-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: prod, namespace: default}
spec:
  hosts: [shop.example.com, admin.example.com]
  gateways: [istio-system/prod-gateway]
  http:
  - match:
    - uri: {regex: '/api/v[0-9]+/products/[0-9]+'}
    route:
    - destination: {host: productpage, port: {number: 9080}}
    corsPolicy:
      allowOrigins: [{exact: 'https://app.example.com'}]
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      maxAge: 24h
  - match:
    - uri: {prefix: /reviews/}
    route:
    - destination: {host: reviews, port: {number: 9080}}
"
    .to_string()
}

/// Response headers (lowercased) of one curl from the host.
fn head(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

#[test]
fn https_redirect_two_hosts_two_secrets_regex_prefix_and_cors() {
    const SHOP: &str = "shop.example.com";
    const ADMIN: &str = "admin.example.com";
    let mesh = bookinfo_with_gateway();
    let (shop_ca, shop_cert, shop_key) = certs("shop ca", SHOP);
    let (admin_ca, admin_cert, admin_key) = certs("admin ca", ADMIN);
    let secrets = mesh.file(
        "secrets.yaml",
        &format!(
            "{}---\n{}",
            tls_secret("shop-cert", &shop_cert, &shop_key),
            tls_secret("admin-cert", &admin_cert, &admin_key)
        ),
    );
    // Waited for, as in the test above: otherwise the Secrets' own version can
    // be the one the Gateway's wait sees, and port 80 answers from the
    // bookinfo Gateway (404) before the redirect server exists.
    mesh.changed_by(&secrets, &[GATEWAY], || {
        mesh.ok(&["apply", "-f", &secrets]);
    });
    let gw = mesh.file("prod.yaml", &prod_gateway());
    mesh.apply(&gw, &[GATEWAY]);
    let p80 = ingress(&mesh, "80");
    let p80 = p80.rsplit(':').next().unwrap();
    let p443 = ingress(&mesh, "443");
    let p443 = p443.rsplit(':').next().unwrap();
    let resolve = |h: &str, p: &str| format!("{h}:{p}:127.0.0.1");
    let (shop_ca, admin_ca) = (
        mesh.file("shop-ca.pem", &shop_ca),
        mesh.file("admin-ca.pem", &admin_ca),
    );
    let https = |host: &str, ca: &str, path: &str| {
        curl(&[
            "--resolve",
            &resolve(host, p443),
            "--cacert",
            ca,
            &format!("https://{host}:{p443}{path}"),
        ])
    };

    // Port 80 only redirects: 301 to https, same host and path.
    let h = head(&[
        "--resolve",
        &resolve(SHOP, p80),
        &format!("http://{SHOP}:{p80}/reviews/0"),
    ]);
    assert!(h.starts_with("http/1.1 301"), "{h}");
    assert!(
        h.lines()
            .any(|l| l.starts_with("location: https://shop.example.com")
                && l.trim_end().ends_with("/reviews/0")),
        "{h}"
    );

    // Each host's certificate, verified with its own CA; the other CA fails.
    let (code, reply, err) = https(SHOP, &shop_ca, "/api/v1/products/7");
    assert_eq!(code, 200, "{err}");
    assert_eq!(reply.unwrap().pod, "productpage-v1-0");
    let (code, reply, err) = https(ADMIN, &admin_ca, "/reviews/1");
    assert_eq!(code, 200, "{err}");
    assert!(reply.unwrap().pod.starts_with("reviews-v"));
    let (code, _, err) = https(SHOP, &admin_ca, "/api/v1/products/7");
    assert_eq!(
        code, 0,
        "shop's certificate accepted with admin's CA: {err}"
    );
    // openssl s_client shows the SNI choice: the issuer of each host's chain.
    for (host, issuer) in [(SHOP, "shop ca"), (ADMIN, "admin ca")] {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{p443}")])
            .args(["-servername", host])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.trim_start().starts_with("issuer="));
        assert!(line.is_some_and(|l| l.contains(issuer)), "{host}: {text}");
    }

    // Regex and prefix routes; anything else is 404 from the gateway.
    let (code, _, _) = https(SHOP, &shop_ca, "/api/v2/products/12");
    assert_eq!(code, 200);
    for path in ["/api/v1/products/x", "/productpage", "/reviews"] {
        let (code, reply, _) = https(SHOP, &shop_ca, path);
        assert_eq!((code, reply.is_none()), (404, true), "{path}");
    }

    // A CORS preflight for the regex route is answered with the allow headers.
    let h = head(&[
        "--resolve",
        &resolve(SHOP, p443),
        "--cacert",
        &shop_ca,
        "-X",
        "OPTIONS",
        "-H",
        "origin: https://app.example.com",
        "-H",
        "access-control-request-method: POST",
        "-H",
        "access-control-request-headers: x-token",
        &format!("https://{SHOP}:{p443}/api/v1/products/7"),
    ]);
    assert!(
        h.starts_with("http/1.1 200") || h.starts_with("http/2 200"),
        "{h}"
    );
    for want in [
        "access-control-allow-origin: https://app.example.com",
        "access-control-allow-methods: get,post",
        "access-control-allow-headers: x-token",
        "access-control-max-age: 86400",
    ] {
        assert!(h.lines().any(|l| l.trim_end() == want), "{want} in\n{h}");
    }

    // Rotation of shop's Secret under a curl loop (a new connection per call,
    // trusting the old and the new CA): no call fails, and the new chain is
    // served without a restart.
    let (shop_ca2, shop_cert2, shop_key2) = certs("shop ca two", SHOP);
    let both = mesh.file(
        "shop-cas.pem",
        &format!("{}{shop_ca2}", std::fs::read_to_string(&shop_ca).unwrap()),
    );
    let shop_ca2 = mesh.file("shop-ca2.pem", &shop_ca2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let looper = {
        let (stop, done, both, resolve, url) = (
            stop.clone(),
            done.clone(),
            both.clone(),
            resolve(SHOP, p443),
            format!("https://{SHOP}:{p443}/api/v1/products/7"),
        );
        std::thread::spawn(move || {
            let mut codes = Vec::new();
            for _ in 0..3000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                codes.push(curl(&["--resolve", &resolve, "--cacert", &both, &url]).0);
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            codes
        })
    };
    let rotated = mesh.file(
        "shop-rotated.yaml",
        &tls_secret("shop-cert", &shop_cert2, &shop_key2),
    );
    mesh.ok(&["apply", "-f", &rotated]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while https(SHOP, &shop_ca2, "/api/v1/products/7").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "rotated certificate not served in 15s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few more calls of the loop on the new certificate, then stop it.
    let seen = done.load(std::sync::atomic::Ordering::Relaxed);
    while done.load(std::sync::atomic::Ordering::Relaxed) < seen + 3 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(15),
            "the loop stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let codes = looper.join().unwrap();
    assert!(codes.len() >= 4, "{codes:?}");
    eprintln!("{} calls during the rotation, all 200", codes.len());
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    assert_eq!(https(SHOP, &shop_ca, "/api/v1/products/7").0, 0);

    // Deleting admin's Secret turns only that server's TLS off.
    let admin_secret = mesh.file(
        "admin-secret.yaml",
        &tls_secret("admin-cert", &admin_cert, &admin_key),
    );
    mesh.change("delete", &admin_secret, &[GATEWAY]);
    let (code, _, err) = https(ADMIN, &admin_ca, "/reviews/1");
    assert_eq!(code, 0, "admin still served without its Secret: {err}");
    let (code, reply, err) = https(SHOP, &shop_ca2, "/api/v1/products/7");
    assert_eq!(code, 200, "{err}");
    assert_eq!(reply.unwrap().pod, "productpage-v1-0");
}
