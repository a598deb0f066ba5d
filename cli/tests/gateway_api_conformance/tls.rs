//! Core HTTP profile (GATEWAY-HTTP), TLS scenarios: HTTPS listeners'
//! certificate references (missing or specific ReferenceGrant, invalid
//! Secrets) and a request over TLS through a Gateway's HTTPS listener.

use crate::checks::{answered, listener_has, RESOLVED};
use crate::env::{Check, Env};

pub fn secret_missing_reference_grant(env: &Env) -> Check {
    listener_has(
        env,
        "gateway-secret-missing-reference-grant",
        "https",
        &[("ResolvedRefs", "False", "RefNotPermitted")],
    )
    .map(drop)
}

pub fn secret_reference_grant_specific(env: &Env) -> Check {
    listener_has(
        env,
        "gateway-secret-reference-grant-specific",
        "https",
        &[RESOLVED],
    )
    .map(drop)
}

pub fn invalid_tls_configuration(env: &Env) -> Check {
    for gw in [
        "gateway-certificate-nonexistent-secret",
        "gateway-certificate-unsupported-kind",
        "gateway-certificate-malformed-secret",
    ] {
        listener_has(
            env,
            gw,
            "https",
            &[("ResolvedRefs", "False", "InvalidCertificateRef")],
        )?;
    }
    Ok(())
}

pub fn https_listener(env: &Env) -> Check {
    listener_has(
        env,
        "same-namespace-with-https-listener",
        "https",
        &[RESOLVED],
    )?;
    let addr = env.gw("same-namespace-with-https-listener", 443)?;
    let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    let resolve = format!("example.org:{port}:127.0.0.1");
    let r = env
        .curl(
            None,
            &["--resolve", &resolve, "--cacert", &env.ca],
            &format!("https://example.org:{port}/"),
            1,
        )
        .pop()
        .ok_or("no answer over TLS")?;
    answered(
        &r,
        200,
        Some("infra-backend-v1"),
        "GET https://example.org/",
    )
}
