//! Core HTTP profile (GATEWAY-HTTP), HTTPRoute scenarios: requests from the
//! host through a Gateway's published port (path, header and hostname
//! matching, header modifiers, weights) and the routes' statuses (cross-
//! namespace references, ReferenceGrant, invalid backends and parents).

use crate::checks::{answered, ensure, route_has, split, until, ACCEPTED, RESOLVED};
use crate::env::{Check, Env, INFRA};

pub fn simple_same_namespace(env: &Env) -> Check {
    route_has(
        env,
        INFRA,
        "gateway-conformance-infra-test",
        "same-namespace",
        &[ACCEPTED, RESOLVED],
    )?;
    let r = env.get("same-namespace", "any.example", "/", &[])?;
    answered(&r, 200, Some("infra-backend-v1"), "GET /")
}

pub fn cross_namespace(env: &Env) -> Check {
    route_has(
        env,
        "gateway-conformance-web-backend",
        "cross-namespace",
        "backend-namespaces",
        &[ACCEPTED, RESOLVED],
    )?;
    let r = env.get("backend-namespaces", "any.example", "/", &[])?;
    answered(&r, 200, Some("web-backend"), "GET /")
}

/// `(path, expected backend or None for 404)` through `gateway` with `host`.
fn paths(env: &Env, gateway: &str, host: &str, cases: &[(&str, &[&str], Option<&str>)]) -> Check {
    for (path, headers, backend) in cases {
        let r = env.get(gateway, host, path, headers)?;
        let code = if backend.is_some() { 200 } else { 404 };
        answered(&r, code, *backend, &format!("{host}{path} {headers:?}"))?;
    }
    Ok(())
}

pub fn exact_path_matching(env: &Env) -> Check {
    paths(
        env,
        "same-namespace",
        "any.example",
        &[
            ("/one", &[], Some("infra-backend-v1")),
            ("/two", &[], Some("infra-backend-v2")),
            ("/", &[], None),
            ("/one/example", &[], None),
            ("/Two", &[], None),
        ],
    )
}

pub fn matching(env: &Env) -> Check {
    paths(
        env,
        "same-namespace",
        "any.example",
        &[
            ("/", &[], Some("infra-backend-v1")),
            ("/example", &[], Some("infra-backend-v1")),
            ("/v2", &[], Some("infra-backend-v2")),
            ("/v2/example", &[], Some("infra-backend-v2")),
            ("/v2example", &[], Some("infra-backend-v1")),
            ("/", &["version: two"], Some("infra-backend-v2")),
        ],
    )
}

pub fn matching_across_routes(env: &Env) -> Check {
    let gw = "same-namespace";
    paths(
        env,
        gw,
        "example.com",
        &[
            ("/", &[], Some("infra-backend-v1")),
            ("/example", &[], Some("infra-backend-v1")),
            ("/v2", &[], Some("infra-backend-v2")),
            ("/", &["version: two"], Some("infra-backend-v2")),
        ],
    )?;
    paths(
        env,
        gw,
        "test.example.com",
        &[
            ("/v2", &[], Some("infra-backend-v1")),
            ("/", &["version: two"], Some("infra-backend-v1")),
        ],
    )?;
    paths(env, gw, "other.example.com", &[("/", &[], None)])
}

pub fn header_matching(env: &Env) -> Check {
    paths(
        env,
        "same-namespace",
        "any.example",
        &[
            ("/", &["version: one"], Some("infra-backend-v1")),
            ("/", &["version: two"], Some("infra-backend-v2")),
            (
                "/",
                &["version: two", "color: orange"],
                Some("infra-backend-v1"),
            ),
            ("/", &["color: blue"], Some("infra-backend-v1")),
            ("/", &["color: green"], Some("infra-backend-v1")),
            ("/", &["color: red"], None),
            ("/", &[], None),
        ],
    )
}

pub fn hostname_intersection(env: &Env) -> Check {
    let gw = "httproute-hostname-intersection";
    for (host, path, backend) in [
        ("very.specific.com", "/s1", Some("infra-backend-v1")),
        ("non.matching.com", "/s1", None),
        ("foo.nonmatchingwildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("bar.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("foo.bar.wildcard.io", "/s2", None),
        ("non.matching.com", "/s2", None),
        ("wildcard.io", "/s2", None),
        ("very.specific.com", "/s3", Some("infra-backend-v3")),
        ("foo.specific.com", "/s3", None),
        ("foo.anotherwildcard.io", "/s4", Some("infra-backend-v1")),
        ("wildcard.io", "/s5", None),
        ("specific.but.wrong.com", "/s5", None),
    ] {
        paths(env, gw, host, &[(path, &[], backend)])?;
    }
    route_has(
        env,
        INFRA,
        "no-intersecting-hosts",
        gw,
        &[("Accepted", "False", "NoMatchingListenerHostname")],
    )
}

pub fn listener_hostname_matching(env: &Env) -> Check {
    let gw = "httproute-listener-hostname-matching";
    for (host, backend) in [
        ("bar.com", Some("infra-backend-v1")),
        ("foo.bar.com", Some("infra-backend-v2")),
        ("baz.bar.com", Some("infra-backend-v3")),
        ("boo.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.foo.com", Some("infra-backend-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ] {
        paths(env, gw, host, &[("/", &[], backend)])?;
    }
    Ok(())
}

pub fn request_header_modifier(env: &Env) -> Check {
    let gw = "same-namespace";
    let r = env.get(
        gw,
        "any.example",
        "/set",
        &["X-Header-Set: some-other-value"],
    )?;
    answered(&r, 200, Some("infra-backend-v1"), "/set")?;
    ensure(
        r.req_header("x-header-set") == Some("set-overwrites-values"),
        || {
            format!(
                "/set: backend saw x-header-set {:?}",
                r.req_header("x-header-set")
            )
        },
    )?;
    let r = env.get(gw, "any.example", "/add", &["X-Header-Add: some-value"])?;
    answered(&r, 200, Some("infra-backend-v1"), "/add")?;
    ensure(
        r.req_header("x-header-add") == Some("some-value, add-appends-values"),
        || {
            format!(
                "/add: backend saw x-header-add {:?}",
                r.req_header("x-header-add")
            )
        },
    )?;
    let r = env.get(gw, "any.example", "/remove", &["X-Header-Remove: gone"])?;
    answered(&r, 200, Some("infra-backend-v1"), "/remove")?;
    ensure(r.req_header("x-header-remove").is_none(), || {
        "/remove: backend still saw x-header-remove".to_string()
    })
}

pub fn weight(env: &Env) -> Check {
    // Converged first (the route answers), then one measured batch.
    until(|| {
        answered(
            &env.get("same-namespace", "any.example", "/", &[])?,
            200,
            Some("infra-backend-v"),
            "GET /",
        )
    })?;
    let addr = env.gw("same-namespace", 80)?;
    let res = env.curl(
        None,
        &["-H", "Host: any.example"],
        &format!("http://{addr}/"),
        100,
    );
    ensure(res.len() == 100, || format!("{} answers of 100", res.len()))?;
    split(
        &res,
        &[
            ("infra-backend-v1", 0.7),
            ("infra-backend-v2", 0.3),
            ("infra-backend-v3", 0.0),
        ],
    )
}

fn invalid_backend(env: &Env, name: &str, reason: &str) -> Check {
    route_has(
        env,
        INFRA,
        name,
        "same-namespace",
        &[ACCEPTED, ("ResolvedRefs", "False", reason)],
    )?;
    let r = env.get("same-namespace", "any.example", "/", &[])?;
    answered(&r, 500, None, "GET / (unresolved backend)")
}

pub fn reference_grant(env: &Env) -> Check {
    route_has(
        env,
        INFRA,
        "reference-grant",
        "same-namespace",
        &[ACCEPTED, RESOLVED],
    )?;
    let r = env.get("same-namespace", "any.example", "/", &[])?;
    answered(&r, 200, Some("app-backend-v1"), "GET /")
}

pub fn invalid_cross_namespace_parent(env: &Env) -> Check {
    route_has(
        env,
        "gateway-conformance-web-backend",
        "invalid-cross-namespace-parent-ref",
        "same-namespace",
        &[("Accepted", "False", "NotAllowedByListeners")],
    )?;
    let r = env.get("same-namespace", "any.example", "/cross", &[])?;
    answered(&r, 404, None, "GET /cross")
}

pub fn disallowed_kind(env: &Env) -> Check {
    route_has(
        env,
        INFRA,
        "disallowed-kind",
        "tcproute-only",
        &[("Accepted", "False", "NotAllowedByListeners")],
    )
}

pub fn invalid_nonexistent(env: &Env) -> Check {
    invalid_backend(env, "invalid-nonexistent-backend-ref", "BackendNotFound")
}
pub fn invalid_kind(env: &Env) -> Check {
    invalid_backend(env, "invalid-backend-ref-kind", "InvalidKind")
}
pub fn invalid_cross_ns_backend(env: &Env) -> Check {
    invalid_backend(
        env,
        "invalid-cross-namespace-backend-ref",
        "RefNotPermitted",
    )
}
