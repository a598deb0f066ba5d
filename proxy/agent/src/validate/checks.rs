//! Field-level checks shared by every kind: names, hosts, durations, ports, CIDRs,
//! regexes and string matches, with Istio's rules. Values the proxy compiles
//! (durations, regexes, string matches) are checked by compiling them with the
//! proxy's own parsers ([`mesh_api::values`]).

use super::report::Report;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_api::networking::StringMatch;
use mesh_api::values;
use std::time::Duration;

/// Checks name and namespace are DNS-1123 labels (Kubernetes' own rule).
pub fn metadata(r: &mut Report<'_>, meta: &ObjectMeta) {
    match meta.name.as_deref() {
        None | Some("") => r.error("metadata.name", (), "name is required"),
        Some(n) if !dns1123_subdomain(n) => r.error(
            "metadata.name",
            n,
            "must be a lower-case DNS-1123 subdomain",
        ),
        _ => {}
    }
    if let Some(ns) = meta.namespace.as_deref() {
        if !dns1123_label(ns) {
            r.error(
                "metadata.namespace",
                ns,
                "must be a lower-case DNS-1123 label",
            );
        }
    }
}

pub fn dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns1123_label)
}

/// Dot-separated DNS-1123 labels with no overall length cap: what the
/// networking kinds accept for gateway names and subset names.
pub fn dns1123_subdomain_like(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(dns1123_label)
}

/// A host as Istio accepts it: a DNS name (short or qualified), optionally with a
/// leading `*` wildcard label, or `*` alone. Upper case is accepted as Istio does.
pub fn valid_host(h: &str) -> bool {
    if h == "*" {
        return true;
    }
    let rest = h.strip_prefix("*.").unwrap_or(h);
    !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Checks a host field; `allow_wildcard` is false where Istio requires a concrete host.
pub fn host(r: &mut Report<'_>, path: &str, h: &str, allow_wildcard: bool) {
    if h.is_empty() {
        r.error(path, h, "host must not be empty");
    } else if !valid_host(h) {
        r.error(
            path,
            h,
            "invalid host: must be a DNS name, optionally with a leading '*' label",
        );
    } else if !allow_wildcard && h.contains('*') {
        r.error(path, h, "wildcard host is not allowed here");
    }
}

/// Checks an optional duration field: well formed and at least 1ms (Istio's floor).
pub fn duration(r: &mut Report<'_>, path: &str, d: Option<&String>) {
    let Some(d) = d else { return };
    match values::duration(d) {
        Err(e) => r.error(path, d, e.to_string()),
        Ok(v) if v < Duration::from_millis(1) => r.error(path, d, "duration must be at least 1ms"),
        _ => {}
    }
}

/// Checks a port number is in 1..=65535.
pub fn port(r: &mut Report<'_>, path: &str, p: u32) {
    if p == 0 || p > 65535 {
        r.error(path, p, "port number must be in 1..65535");
    }
}

/// Checks an IP address or CIDR block.
pub fn cidr(r: &mut Report<'_>, path: &str, s: &str) {
    if values::ip_net(s).is_err() {
        r.error(path, s, "invalid IP address or CIDR block");
    }
}

/// Checks a regex searched anywhere in a value (`uriRegexRewrite.match`), as
/// the proxy compiles it.
pub fn regex(r: &mut Report<'_>, path: &str, re: &str) {
    if let Err(e) = values::regex(re) {
        r.error(path, re, e.to_string());
    }
}

/// A StringMatch must set exactly one of `exact`, `prefix`, `regex`, and compile
/// exactly as the proxy compiles it (`ignore_case`: the `ignoreUriCase` form).
pub fn string_match(r: &mut Report<'_>, path: &str, m: &StringMatch, ignore_case: bool) {
    if m.exact.is_none() && m.prefix.is_none() && m.regex.is_none() {
        r.error(path, m, values::ValueError::StringMatch.to_string());
        return;
    }
    match values::Matcher::compile(m, ignore_case) {
        Err(e @ values::ValueError::Regex { .. }) => {
            r.error(format!("{path}.regex"), &m.regex, e.to_string())
        }
        Err(e) => r.error(path, m, e.to_string()),
        Ok(_) => {}
    }
}

/// `exportTo` entries: `.`, `*`, `~` (alone) or a namespace name.
pub fn export_to(r: &mut Report<'_>, path: &str, list: &[String]) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, e) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !(e == "." || e == "*" || e == "~" || dns1123_label(e)) {
            r.error(&p, e, "exportTo must be '.', '*', '~' or a namespace name");
        }
        if e == "~" && list.len() > 1 {
            r.error(
                &p,
                e,
                "'~' (export to none) cannot be combined with other entries",
            );
        }
        if !seen.insert(e) {
            r.error(&p, e, "duplicate exportTo entry");
        }
    }
}

/// A percentage in [0, 100].
pub fn percent(r: &mut Report<'_>, path: &str, v: f64) {
    if !(0.0..=100.0).contains(&v) {
        r.error(path, v, "percentage must be in [0, 100]");
    }
}

/// Checks a value is one of an enum's names.
pub fn one_of(r: &mut Report<'_>, path: &str, v: Option<&String>, allowed: &[&str]) {
    if let Some(v) = v {
        if !allowed.contains(&v.as_str()) {
            r.error(path, v, format!("must be one of {}", allowed.join(", ")));
        }
    }
}

/// Flags duplicates in a list of strings.
pub fn unique<'s>(
    r: &mut Report<'_>,
    path: &str,
    items: impl IntoIterator<Item = &'s str>,
    what: &str,
) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in items.into_iter().enumerate() {
        if !seen.insert(s) {
            r.error(format!("{path}[{i}]"), s, format!("duplicate {what}"));
        }
    }
}

/// Protocols Istio accepts on Gateway servers, ServiceEntry and Sidecar ports.
pub const PROTOCOLS: [&str; 11] = [
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "REDIS", "MYSQL", "UDP",
];

/// Checks a port protocol name (case-insensitive, as Istio parses it).
pub fn protocol(r: &mut Report<'_>, path: &str, p: Option<&String>) {
    if let Some(p) = p {
        if !PROTOCOLS.contains(&p.to_ascii_uppercase().as_str()) {
            r.error(
                path,
                p,
                format!("unsupported protocol; use one of {}", PROTOCOLS.join(", ")),
            );
        }
    }
}
