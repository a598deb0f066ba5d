//! The requests of the authorization table (pod, method, URL, extra curl args,
//! expected status) and how one is sent. Separate from `local_security.rs` so
//! the test reads as its steps, not as a 29-row table.

use crate::common::Local;

/// `METHOD url` from `pod` with extra curl args: the status code (0: no answer).
pub(crate) fn status(mesh: &Local, pod: &str, method: &str, url: &str, extra: &[&str]) -> u16 {
    let mut argv = vec![
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "--path-as-is",
        "-X",
        method,
    ];
    argv.extend_from_slice(extra);
    argv.push(url);
    let out = mesh.exec(pod, None, &argv);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The authorization table against `web` (the base URL of web's port 80), for
/// the policies of `POLICIES`.
pub(crate) fn authz_cases(
    web: &str,
) -> Vec<(&'static str, &'static str, String, Vec<&'static str>, u16)> {
    vec![
        // The client's own rules (principal + method + path).
        (
            "shop/client-0",
            "GET",
            format!("{web}/public/index"),
            vec![],
            200,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}/api/items"),
            vec![],
            200,
        ),
        (
            "shop/client-0",
            "POST",
            format!("{web}/api/items"),
            vec![],
            403,
        ),
        ("shop/client-0", "GET", format!("{web}/other"), vec![], 403),
        // DENY paths, also behind normalization tricks.
        (
            "shop/client-0",
            "GET",
            format!("{web}/api/admin"),
            vec![],
            403,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}/api/admin/users"),
            vec![],
            403,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}/public/secret"),
            vec![],
            403,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}/public/../api/admin"),
            vec![],
            403,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}//api/admin"),
            vec![],
            403,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}/%61pi/admin"),
            vec![],
            403,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}/public/./secret"),
            vec![],
            403,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}/public/%2e%2e/api/admin"),
            vec![],
            403,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}/public/%2e%2e/public/ok"),
            vec![],
            200,
        ),
        // `when` on a header, exact and prefix values.
        (
            "shop/client-0",
            "POST",
            format!("{web}/api/orders"),
            vec!["-H", "x-tenant: acme"],
            200,
        ),
        (
            "shop/client-0",
            "POST",
            format!("{web}/api/orders"),
            vec!["-H", "x-tenant: globex-east"],
            200,
        ),
        (
            "shop/client-0",
            "POST",
            format!("{web}/api/orders"),
            vec!["-H", "x-tenant: initech"],
            403,
        ),
        (
            "shop/client-0",
            "POST",
            format!("{web}/api/orders"),
            vec![],
            403,
        ),
        (
            "shop/client-0",
            "GET",
            format!("{web}/healthz"),
            vec![],
            200,
        ),
        // A port DENY (the second service port).
        (
            "shop/client-0",
            "GET",
            "http://web.shop:9090/public/index".into(),
            vec![],
            403,
        ),
        // By namespace: anything from ops with GET/POST, except DENY's paths.
        ("ops/admin-0", "GET", format!("{web}/anything"), vec![], 200),
        (
            "ops/admin-0",
            "POST",
            format!("{web}/anything"),
            vec![],
            200,
        ),
        (
            "ops/admin-0",
            "DELETE",
            format!("{web}/anything"),
            vec![],
            403,
        ),
        (
            "ops/admin-0",
            "GET",
            format!("{web}/api/admin"),
            vec![],
            403,
        ),
        ("ops/admin-0", "GET", format!("{web}/healthz"), vec![], 200),
        // Same namespace, other service account: not the client's principal.
        (
            "shop/intruder-0",
            "GET",
            format!("{web}/public/index"),
            vec![],
            403,
        ),
        (
            "shop/intruder-0",
            "POST",
            format!("{web}/api/orders"),
            vec!["-H", "x-tenant: acme"],
            403,
        ),
        (
            "shop/intruder-0",
            "GET",
            format!("{web}/healthz"),
            vec![],
            200,
        ),
        // Plaintext has no namespace: notNamespaces DENY wins over the open /healthz.
        (
            "legacy/outside-0",
            "GET",
            format!("{web}/healthz"),
            vec![],
            403,
        ),
        (
            "legacy/outside-0",
            "GET",
            format!("{web}/public/index"),
            vec![],
            403,
        ),
    ]
}
