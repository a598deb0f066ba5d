//! Security on `meshctl local`: sidecars talk mutual TLS with certificates from the
//! agent's CA (XFCC and Istio's metrics show the verified SPIFFE identities),
//! PeerAuthentication PERMISSIVE/STRICT decides about plaintext callers, and a
//! table of AuthorizationPolicy cases — principals, namespaces, methods, paths with
//! normalization tricks, headers, ports, DENY before ALLOW, an empty ALLOW — is
//! each asserted with a real request between real pods.
//!
//! The test is here; its manifests are in `local_security_support/manifests.rs`
//! and the authorization table and the curl helper in
//! `local_security_support/requests.rs`.

mod common;

#[path = "local_security_support/manifests.rs"]
mod manifests;

#[path = "local_security_support/requests.rs"]
mod requests;

use common::*;
use manifests::{APPS, POLICIES};
use requests::{authz_cases, status};

#[test]
fn mtls_peer_authentication_and_authorization_table() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    mesh.ok(&["up", "-f", &apps]);
    const WEB: &str = "shop/web-0";

    // Sidecar to sidecar is mutual TLS with the caller's verified identity.
    let r = mesh.calls("shop/client-0", "http://web.shop/hello", 1, &[]);
    let reply = r[0].1.as_ref().expect("echo reply");
    let xfcc = &reply.headers["x-forwarded-client-cert"];
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/shop/sa/client"),
        "{xfcc}"
    );
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/shop/sa/web"),
        "{xfcc}"
    );
    let m = mesh.metrics(WEB);
    assert!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[
                "reporter=\"destination\"",
                "connection_security_policy=\"mutual_tls\"",
                "source_principal=\"spiffe://cluster.local/ns/shop/sa/client\"",
            ],
        ) >= 1.0,
        "{m}"
    );
    // The certificate web's sidecar serves, as `istioctl proxy-config secret` shows it.
    let secret = mesh.ok(&["proxy-config", "secret", WEB]);
    assert!(
        secret.contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{secret}"
    );
    assert!(
        secret.contains("Cert Chain") && secret.contains("ROOTCA"),
        "{secret}"
    );
    // Its SERIAL NUMBER is the one of the certificate web's sidecar really serves,
    // read by a TLS handshake from a pod without sidecar (Istio's ALPN, so the
    // PERMISSIVE inbound terminates mesh TLS; the missing client cert fails the
    // handshake only after the server certificate has been sent).
    let cells: Vec<&str> = secret
        .lines()
        .find(|l| l.starts_with("default "))
        .unwrap_or_else(|| panic!("{secret}"))
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let shown = cells[4];
    assert!(
        !shown.is_empty() && shown.chars().all(|c| c.is_ascii_hexdigit()),
        "{secret}"
    );
    let served = mesh.exec(
        "legacy/outside-0",
        None,
        &[
            "sh",
            "-c",
            "openssl s_client -connect web.shop:80 -alpn istio-http/1.1 </dev/null 2>/dev/null \
             | openssl x509 -noout -serial",
        ],
    );
    let served = String::from_utf8_lossy(&served.stdout).trim().to_string();
    let norm = |s: &str| s.trim_start_matches('0').to_ascii_lowercase();
    assert_eq!(
        norm(served.strip_prefix("serial=").unwrap_or("?")),
        norm(shown),
        "served {served:?}, shown\n{secret}"
    );
    // PERMISSIVE (the default): a pod without a sidecar still gets in, in plaintext.
    let r = mesh.calls("legacy/outside-0", "http://web.shop/hello", 1, &[]);
    assert_eq!(r[0].0, 200);
    assert!(!r[0]
        .1
        .as_ref()
        .unwrap()
        .headers
        .contains_key("x-forwarded-client-cert"));

    let pol = mesh.file("policies.yaml", POLICIES);
    mesh.apply(&pol, &[WEB]);
    let web = "http://web.shop";
    let cases: Vec<(&str, &str, String, Vec<&str>, u16)> = authz_cases(web);
    let mut failures = Vec::new();
    for (pod, method, url, extra, want) in &cases {
        let got = status(&mesh, pod, method, url, extra);
        if got != *want {
            failures.push(format!(
                "{pod} {method} {url} {extra:?}: got {got}, want {want}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let m = mesh.metrics(WEB);
    let denied = metric_sum(
        &m,
        "istio_requests_total",
        &["reporter=\"destination\"", "response_code=\"403\""],
    );
    let want_denied = cases.iter().filter(|c| c.4 == 403).count() as f64;
    assert_eq!(denied, want_denied, "403s counted by web's sidecar");

    // STRICT: the plaintext caller is refused at the connection; meshed callers keep working.
    let strict = mesh.file(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    mesh.apply(&strict, &[WEB]);
    assert_eq!(
        status(
            &mesh,
            "legacy/outside-0",
            "GET",
            &format!("{web}/healthz"),
            &[]
        ),
        0
    );
    assert_eq!(
        status(
            &mesh,
            "shop/client-0",
            "GET",
            &format!("{web}/public/index"),
            &[]
        ),
        200
    );

    // An ALLOW policy without rules allows nothing.
    let nothing = mesh.file(
        "nothing.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  action: ALLOW\n",
    );
    mesh.apply(&nothing, &[WEB]);
    // Still allowed by web-allow: ALLOW policies are ORed; removing web-allow leaves nothing.
    assert_eq!(
        status(
            &mesh,
            "shop/client-0",
            "GET",
            &format!("{web}/public/index"),
            &[]
        ),
        200
    );
    mesh.change("delete", &pol, &[WEB]);
    assert_eq!(
        status(
            &mesh,
            "shop/client-0",
            "GET",
            &format!("{web}/public/index"),
            &[]
        ),
        403
    );
    assert_eq!(
        status(&mesh, "ops/admin-0", "GET", &format!("{web}/anything"), &[]),
        403
    );
    mesh.change("delete", &nothing, &[WEB]);
    assert_eq!(
        status(&mesh, "shop/client-0", "GET", &format!("{web}/other"), &[]),
        200
    );

    // Local rate limit from the pod annotation: 3 per minute, then 429.
    let codes: Vec<u16> = (0..5)
        .map(|_| {
            status(
                &mesh,
                "shop/client-0",
                "GET",
                "http://limited.shop:8080/",
                &[],
            )
        })
        .collect();
    assert_eq!(codes, [200, 200, 200, 429, 429]);
}
