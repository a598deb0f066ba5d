//! Checks of a DestinationRule's client TLS settings (`trafficPolicy.tls`,
//! also per subset and per port): the mode, and which certificate fields each
//! mode allows or needs.

use crate::validate::checks::*;
use crate::validate::report::Report;
use mesh_api::networking::*;

const CLIENT_TLS: [&str; 4] = ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];

/// Checks the client TLS settings at `tp` (a `...tls` path).
pub fn client_tls(r: &mut Report<'_>, tp: &str, t: &ClientTlsSettings) {
    one_of(r, &format!("{tp}.mode"), t.mode.as_ref(), &CLIENT_TLS);
    let has_files =
        t.client_certificate.is_some() || t.private_key.is_some() || t.ca_certificates.is_some();
    match t.mode.as_deref() {
        Some("ISTIO_MUTUAL") if has_files || t.credential_name.is_some() => r.error(
            tp,
            t.mode.as_ref(),
            "cannot specify client certificates, CA certificates or credentialName when mode is ISTIO_MUTUAL",
        ),
        Some("MUTUAL") if t.credential_name.is_none() && (t.client_certificate.is_none() || t.private_key.is_none()) => r.error(
            tp,
            t.mode.as_ref(),
            "mode MUTUAL needs clientCertificate and privateKey (files in the pod)",
        ),
        Some("DISABLE") if has_files || t.credential_name.is_some() || t.sni.is_some() => {
            r.error(tp, t.mode.as_ref(), "TLS settings given but mode is DISABLE")
        }
        _ => {}
    }
    // Istio's sidecars fetch credentialName through SDS from a Secret; we do
    // not yet, and must not silently send plaintext instead.
    if t.credential_name.is_some() {
        r.error(
            format!("{tp}.credentialName"),
            t.credential_name.as_ref(),
            "credentialName is not supported for sidecars yet; use clientCertificate/privateKey/caCertificates files",
        );
    }
    if t.credential_name.is_some() && (t.client_certificate.is_some() || t.private_key.is_some()) {
        r.error(
            format!("{tp}.credentialName"),
            t.credential_name.as_ref(),
            "credentialName and clientCertificate/privateKey are mutually exclusive",
        );
    }
}
