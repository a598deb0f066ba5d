//! Single-resource checks of Gateway: each server's port, protocol and hosts,
//! and its TLS settings (mode, protocol versions, certificates or
//! credentialName).

use crate::validate::checks::*;
use crate::validate::report::Report;
use mesh_api::networking::*;

const SERVER_TLS: [&str; 6] = [
    "PASSTHROUGH",
    "SIMPLE",
    "MUTUAL",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
    "OPTIONAL_MUTUAL",
];

/// Checks a Gateway spec: each server's port, hosts and TLS settings.
pub fn gateway(r: &mut Report<'_>, s: &GatewaySpec) {
    if s.servers.is_empty() {
        r.error("spec.servers", (), "gateway must have at least one server");
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, srv) in s.servers.iter().enumerate() {
        let p = format!("spec.servers[{i}]");
        match &srv.port {
            None => r.error(format!("{p}.port"), (), "server must have a port"),
            Some(pt) => {
                port(r, &format!("{p}.port.number"), pt.number);
                protocol(r, &format!("{p}.port.protocol"), pt.protocol.as_ref());
                if pt.protocol.is_none() {
                    r.error(format!("{p}.port.protocol"), (), "protocol is required");
                }
                if let Some(n) = &pt.name {
                    if !names.insert(n.clone()) {
                        r.error(format!("{p}.port.name"), n, "duplicate server port name");
                    }
                }
                let proto = pt.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
                if (proto == "HTTPS" || proto == "TLS") && srv.tls.is_none() {
                    r.error(
                        format!("{p}.tls"),
                        (),
                        format!("server on protocol {proto} must have tls settings"),
                    );
                }
            }
        }
        if srv.hosts.is_empty() {
            r.error(
                format!("{p}.hosts"),
                (),
                "server must have at least one host",
            );
        }
        for (j, h) in srv.hosts.iter().enumerate() {
            let hp = format!("{p}.hosts[{j}]");
            let (ns, name) = h.split_once('/').unwrap_or(("", h));
            if !(ns.is_empty() || ns == "." || ns == "*" || dns1123_label(ns)) {
                r.error(
                    &hp,
                    h,
                    "namespace part must be '.', '*' or a namespace name",
                );
            }
            host(r, &hp, name, true);
        }
        let proto = srv
            .port
            .as_ref()
            .and_then(|pt| pt.protocol.as_deref())
            .unwrap_or("")
            .to_ascii_uppercase();
        if let Some(t) = &srv.tls {
            server_tls(r, &format!("{p}.tls"), &proto, t);
        }
    }
}

/// Checks a server's TLS settings at `tp`, for a server on protocol `proto`
/// (upper case, empty when unset).
fn server_tls(r: &mut Report<'_>, tp: &str, proto: &str, t: &ServerTlsSettings) {
    one_of(r, &format!("{tp}.mode"), t.mode.as_ref(), &SERVER_TLS);
    let terminates = proto == "HTTPS" || proto == "TLS";
    // Istio's default mode is SIMPLE: an HTTPS/TLS server without a mode
    // must name its certificate all the same.
    let mode = t
        .mode
        .clone()
        .or_else(|| terminates.then(|| "SIMPLE".to_string()));
    if matches!(mode.as_deref(), Some("PASSTHROUGH" | "AUTO_PASSTHROUGH")) && !terminates {
        r.error(
            format!("{tp}.mode"),
            t.mode.as_ref(),
            format!(
                "mode {} needs protocol TLS or HTTPS, not {proto:?}",
                mode.as_deref().unwrap_or("")
            ),
        );
    }
    let versions = ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];
    for (f, v) in [
        ("minProtocolVersion", &t.min_protocol_version),
        ("maxProtocolVersion", &t.max_protocol_version),
    ] {
        one_of(r, &format!("{tp}.{f}"), v.as_ref(), &versions);
    }
    if let (Some(lo), Some(hi)) = (&t.min_protocol_version, &t.max_protocol_version) {
        let rank = |v: &str| versions.iter().position(|x| *x == v);
        if let (Some(a), Some(b)) = (rank(lo), rank(hi)) {
            if a > 0 && b > 0 && a > b {
                r.error(
                    format!("{tp}.minProtocolVersion"),
                    lo,
                    format!("minProtocolVersion is above maxProtocolVersion {hi}"),
                );
            }
        }
    }
    let has_cert = t.server_certificate.is_some() || t.private_key.is_some();
    let cred = t.credential_name.is_some() || !t.credential_names.is_empty();
    match mode.as_deref() {
        Some("SIMPLE") | Some("MUTUAL") | Some("OPTIONAL_MUTUAL")
            if !cred && (t.server_certificate.is_none() || t.private_key.is_none()) =>
        {
            r.error(
                tp,
                t.mode.as_ref(),
                "needs serverCertificate and privateKey, or credentialName",
            )
        }
        Some("MUTUAL") | Some("OPTIONAL_MUTUAL") if !cred && t.ca_certificates.is_none() => r
            .error(
                tp,
                t.mode.as_ref(),
                "mode MUTUAL needs caCertificates, or credentialName",
            ),
        Some("PASSTHROUGH") | Some("AUTO_PASSTHROUGH") | Some("ISTIO_MUTUAL")
            if has_cert || cred =>
        {
            r.error(
                tp,
                t.mode.as_ref(),
                "certificates cannot be set with this TLS mode",
            )
        }
        _ => {}
    }
    if cred && has_cert {
        r.error(
            format!("{tp}.credentialName"),
            t.credential_name.as_ref(),
            "credentialName and serverCertificate/privateKey are mutually exclusive",
        );
    }
}
