//! HTTPRoute rules (and the match/filter checks GRPCRoute shares, see
//! [`super::validate_grpc`]): matches (path, header, query, method), filters
//! (the `type` ↔ body pairing, no repeats, redirect/rewrite exclusivity,
//! ReplacePrefixMatch only after a single PathPrefix match), backends, timeouts
//! and retries, following the upstream schema and CEL rules.

use super::common::{HTTPHeaderFilter, HTTPHeaderMatch, HTTPRequestMirrorFilter, HeaderMatchType};
use super::findings::Findings;
use super::httproute::{
    HTTPPathModifier, HTTPPathModifierType, HTTPRouteFilter, HTTPRouteFilterType, HTTPRouteRule,
    HTTPRouteSpec, PathMatchType,
};
use std::collections::BTreeSet;

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub(crate) fn http_route(out: &mut Findings, s: &HTTPRouteSpec) {
    out.parent_refs("spec.parentRefs", &s.parent_refs);
    out.hostnames("spec.hostnames", &s.hostnames);
    out.min_items("spec.rules", s.rules.len(), 1);
    out.max_items("spec.rules", s.rules.len(), 16);
    let total: usize = s.rules.iter().map(|r| r.matches.len()).sum();
    if total > 128 {
        out.push(
            "spec.rules",
            format!("{total} matches across all rules; at most 128 are allowed"),
        );
    }
    rule_names(out, s.rules.iter().map(|r| r.name.as_ref()));
    for (i, r) in s.rules.iter().enumerate() {
        http_rule(out, &format!("spec.rules[{i}]"), r);
    }
}

pub(super) fn rule_names<'a>(out: &mut Findings, names: impl Iterator<Item = Option<&'a String>>) {
    let mut seen = BTreeSet::new();
    for (i, n) in names.enumerate() {
        let Some(n) = n else { continue };
        let at = format!("spec.rules[{i}].name");
        out.section_name(&at, n);
        if !seen.insert(n) {
            out.push(
                at,
                format!("rule name {n:?} is used twice; names must be unique"),
            );
        }
    }
}

fn http_rule(out: &mut Findings, at: &str, r: &HTTPRouteRule) {
    out.max_items(&format!("{at}.matches"), r.matches.len(), 64);
    for (j, m) in r.matches.iter().enumerate() {
        let mat = format!("{at}.matches[{j}]");
        let p = &m.path;
        let pat = format!("{mat}.path.value");
        match p.type_ {
            PathMatchType::RegularExpression => regex(out, &pat, &p.value),
            PathMatchType::Exact | PathMatchType::PathPrefix => path_value(out, &pat, &p.value),
        }
        header_matches(out, &format!("{mat}.headers"), &m.headers);
        out.max_items(&format!("{mat}.queryParams"), m.query_params.len(), 16);
        let mut seen = BTreeSet::new();
        for (k, q) in m.query_params.iter().enumerate() {
            let qat = format!("{mat}.queryParams[{k}]");
            if q.name.is_empty() || q.name.len() > 256 {
                out.push(
                    format!("{qat}.name"),
                    format!("{:?} is not a valid query parameter name", q.name),
                );
            }
            if !seen.insert(&q.name) {
                out.push(
                    format!("{qat}.name"),
                    format!("query parameter {:?} is matched twice", q.name),
                );
            }
            if q.type_ == HeaderMatchType::RegularExpression {
                regex(out, &format!("{qat}.value"), &q.value);
            }
        }
        if let Some(method) = &m.method {
            if !METHODS.contains(&method.as_str()) {
                out.push(
                    format!("{mat}.method"),
                    format!("method {method:?} is not one of {}", METHODS.join(", ")),
                );
            }
        }
    }
    let single_prefix =
        r.matches.len() == 1 && r.matches[0].path.type_ == PathMatchType::PathPrefix;
    http_filters(out, &format!("{at}.filters"), &r.filters, single_prefix);
    if !r.backend_refs.is_empty() && r.filters.iter().any(|f| f.request_redirect.is_some()) {
        out.push(
            format!("{at}.backendRefs"),
            "a rule with a RequestRedirect filter must not have backendRefs",
        );
    }
    out.max_items(&format!("{at}.backendRefs"), r.backend_refs.len(), 16);
    for (j, b) in r.backend_refs.iter().enumerate() {
        let bat = format!("{at}.backendRefs[{j}]");
        out.backend_ref(&bat, &b.backend);
        http_filters(out, &format!("{bat}.filters"), &b.filters, single_prefix);
    }
    if let Some(t) = &r.timeouts {
        let req = t
            .request
            .as_deref()
            .and_then(|d| duration(out, &format!("{at}.timeouts.request"), d));
        let backend = t
            .backend_request
            .as_deref()
            .and_then(|d| duration(out, &format!("{at}.timeouts.backendRequest"), d));
        if let (Some(req), Some(backend)) = (req, backend) {
            if req != 0 && backend > req {
                out.push(
                    format!("{at}.timeouts.backendRequest"),
                    format!(
                        "backendRequest {:?} is longer than request {:?}",
                        t.backend_request.as_deref().unwrap_or_default(),
                        t.request.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
    }
    if let Some(retry) = &r.retry {
        for (k, c) in retry.codes.iter().enumerate() {
            if !(400..=599).contains(c) {
                out.push(
                    format!("{at}.retry.codes[{k}]"),
                    format!("status code {c} is out of range 400-599"),
                );
            }
        }
        if let Some(a) = retry.attempts {
            if a < 0 {
                out.push(
                    format!("{at}.retry.attempts"),
                    format!("attempts {a} is negative"),
                );
            }
        }
        if let Some(b) = &retry.backoff {
            duration(out, &format!("{at}.retry.backoff"), b);
        }
    }
}

fn http_filters(out: &mut Findings, at: &str, filters: &[HTTPRouteFilter], single_prefix: bool) {
    use HTTPRouteFilterType as T;
    out.max_items(at, filters.len(), 16);
    let mut seen = BTreeSet::new();
    for (i, f) in filters.iter().enumerate() {
        let fat = format!("{at}[{i}]");
        let present = [
            (
                T::RequestHeaderModifier,
                "requestHeaderModifier",
                f.request_header_modifier.is_some(),
            ),
            (
                T::ResponseHeaderModifier,
                "responseHeaderModifier",
                f.response_header_modifier.is_some(),
            ),
            (
                T::RequestMirror,
                "requestMirror",
                f.request_mirror.is_some(),
            ),
            (
                T::RequestRedirect,
                "requestRedirect",
                f.request_redirect.is_some(),
            ),
            (T::URLRewrite, "urlRewrite", f.url_rewrite.is_some()),
            (T::ExtensionRef, "extensionRef", f.extension_ref.is_some()),
        ];
        filter_body(
            out,
            &fat,
            &format!("{:?}", f.type_),
            &present.map(|(t, n, p)| (t == f.type_, n, p)),
        );
        if f.type_ != T::RequestMirror && f.type_ != T::ExtensionRef && !seen.insert(f.type_) {
            out.push(
                format!("{fat}.type"),
                format!("filter {:?} is repeated", f.type_),
            );
        }
        if let Some(h) = &f.request_header_modifier {
            header_filter(out, &format!("{fat}.requestHeaderModifier"), h);
        }
        if let Some(h) = &f.response_header_modifier {
            header_filter(out, &format!("{fat}.responseHeaderModifier"), h);
        }
        if let Some(m) = &f.request_mirror {
            mirror(out, &format!("{fat}.requestMirror"), m);
        }
        if let Some(r) = &f.request_redirect {
            let rat = format!("{fat}.requestRedirect");
            if let Some(s) = &r.scheme {
                if s != "http" && s != "https" {
                    out.push(
                        format!("{rat}.scheme"),
                        format!("scheme {s:?} is not http or https"),
                    );
                }
            }
            if let Some(h) = &r.hostname {
                out.hostname(&format!("{rat}.hostname"), h, false);
            }
            if let Some(p) = r.port {
                out.port(&format!("{rat}.port"), p);
            }
            if ![301, 302, 303, 307, 308].contains(&r.status_code) {
                out.push(
                    format!("{rat}.statusCode"),
                    format!(
                        "status code {} is not one of 301, 302, 303, 307, 308",
                        r.status_code
                    ),
                );
            }
            if let Some(p) = &r.path {
                path_modifier(out, &format!("{rat}.path"), p, single_prefix);
            }
        }
        if let Some(u) = &f.url_rewrite {
            let uat = format!("{fat}.urlRewrite");
            if let Some(h) = &u.hostname {
                out.hostname(&format!("{uat}.hostname"), h, false);
            }
            if let Some(p) = &u.path {
                path_modifier(out, &format!("{uat}.path"), p, single_prefix);
            }
        }
        if let Some(e) = &f.extension_ref {
            out.object_name(&format!("{fat}.extensionRef.name"), &e.name);
        }
    }
    if seen.contains(&T::RequestRedirect) && seen.contains(&T::URLRewrite) {
        out.push(
            at,
            "RequestRedirect and URLRewrite filters must not be used together",
        );
    }
}

/// `present`: for each filter body, (is it the one `type` names, field name, set?).
pub(super) fn filter_body(
    out: &mut Findings,
    at: &str,
    type_: &str,
    present: &[(bool, &str, bool)],
) {
    for &(wanted, name, set) in present {
        if wanted && !set {
            out.push(
                format!("{at}.{name}"),
                format!("filter type {type_} requires {name}"),
            );
        } else if !wanted && set {
            out.push(
                format!("{at}.{name}"),
                format!("{name} must not be set for filter type {type_}"),
            );
        }
    }
}

fn path_modifier(out: &mut Findings, at: &str, p: &HTTPPathModifier, single_prefix: bool) {
    let (full, prefix) = (
        p.replace_full_path.is_some(),
        p.replace_prefix_match.is_some(),
    );
    match p.type_ {
        HTTPPathModifierType::ReplaceFullPath => {
            if !full {
                out.push(
                    format!("{at}.replaceFullPath"),
                    "replaceFullPath is required for type ReplaceFullPath",
                );
            }
            if prefix {
                out.push(
                    format!("{at}.replacePrefixMatch"),
                    "replacePrefixMatch must not be set for type ReplaceFullPath",
                );
            }
        }
        HTTPPathModifierType::ReplacePrefixMatch => {
            if !prefix {
                out.push(
                    format!("{at}.replacePrefixMatch"),
                    "replacePrefixMatch is required for type ReplacePrefixMatch",
                );
            }
            if full {
                out.push(
                    format!("{at}.replaceFullPath"),
                    "replaceFullPath must not be set for type ReplacePrefixMatch",
                );
            }
            if prefix && !single_prefix {
                out.push(
                    format!("{at}.replacePrefixMatch"),
                    "ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix",
                );
            }
        }
    }
    for v in [&p.replace_full_path, &p.replace_prefix_match]
        .into_iter()
        .flatten()
    {
        if v.len() > 1024 {
            out.push(at, format!("{v:?} is longer than 1024 characters"));
        }
    }
}

pub(super) fn header_filter(out: &mut Findings, at: &str, h: &HTTPHeaderFilter) {
    for (field, names) in [
        ("set", h.set.iter().map(|x| &x.name).collect::<Vec<_>>()),
        ("add", h.add.iter().map(|x| &x.name).collect()),
        ("remove", h.remove.iter().collect()),
    ] {
        out.max_items(&format!("{at}.{field}"), names.len(), 16);
        let mut seen = BTreeSet::new();
        for (i, n) in names.iter().enumerate() {
            let nat = if field == "remove" {
                format!("{at}.{field}[{i}]")
            } else {
                format!("{at}.{field}[{i}].name")
            };
            header_name(out, &nat, n);
            if !seen.insert(n.to_ascii_lowercase()) {
                out.push(nat, format!("header {n:?} is listed twice"));
            }
        }
    }
}

pub(super) fn mirror(out: &mut Findings, at: &str, m: &HTTPRequestMirrorFilter) {
    out.object_name(&format!("{at}.backendRef.name"), &m.backend_ref.name);
    if let Some(p) = m.backend_ref.port {
        out.port(&format!("{at}.backendRef.port"), p);
    } else if m.backend_ref.group.is_empty() && m.backend_ref.kind == "Service" {
        out.push(
            format!("{at}.backendRef.port"),
            format!("mirror Service {:?} needs a port", m.backend_ref.name),
        );
    }
    if let Some(p) = m.percent {
        if !(0..=100).contains(&p) {
            out.push(
                format!("{at}.percent"),
                format!("percent {p} is out of range 0-100"),
            );
        }
    }
    if let Some(f) = &m.fraction {
        if m.percent.is_some() {
            out.push(at, "only one of percent and fraction may be set");
        }
        if f.denominator < 1 || f.numerator < 0 || f.numerator > f.denominator {
            out.push(
                format!("{at}.fraction"),
                format!(
                    "fraction {}/{} must have 0 <= numerator <= denominator, denominator >= 1",
                    f.numerator, f.denominator
                ),
            );
        }
    }
}

pub(super) fn header_matches(out: &mut Findings, at: &str, headers: &[HTTPHeaderMatch]) {
    out.max_items(at, headers.len(), 16);
    let mut seen = BTreeSet::new();
    for (k, h) in headers.iter().enumerate() {
        let hat = format!("{at}[{k}]");
        header_name(out, &format!("{hat}.name"), &h.name);
        if !seen.insert(h.name.to_ascii_lowercase()) {
            out.push(
                format!("{hat}.name"),
                format!("header {:?} is matched twice", h.name),
            );
        }
        if h.type_ == HeaderMatchType::RegularExpression {
            regex(out, &format!("{hat}.value"), &h.value);
        }
    }
}

/// RFC 7230 token characters, 1-256 long.
fn header_name(out: &mut Findings, at: &str, n: &str) {
    let ok = !n.is_empty()
        && n.len() <= 256
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    if !ok {
        out.push(at, format!("{n:?} is not a valid header name"));
    }
}

/// Exact/PathPrefix values: absolute, normalized, URL-safe characters.
fn path_value(out: &mut Findings, at: &str, v: &str) {
    let bad = if !v.starts_with('/') {
        Some("must start with '/'")
    } else if v.len() > 1024 {
        Some("is longer than 1024 characters")
    } else if ["//", "/./", "/../", "%2f", "%2F", "#"]
        .iter()
        .any(|s| v.contains(s))
    {
        Some("must not contain '//', '/./', '/../', '%2f' or '#'")
    } else if v.ends_with("/..") || v.ends_with("/.") {
        Some("must not end with '/.' or '/..'")
    } else if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-/._~!$&'()*+,;=:@%".contains(c))
    {
        Some("contains a character not allowed in a path")
    } else {
        None
    };
    if let Some(why) = bad {
        out.push(at, format!("path {v:?} {why}"));
    }
}

pub(super) fn regex(out: &mut Findings, at: &str, v: &str) {
    if let Err(e) = regex::Regex::new(v) {
        let first = e.to_string().lines().last().unwrap_or_default().to_string();
        out.push(
            at,
            format!("{v:?} is not a valid regular expression: {first}"),
        );
    }
}

/// Gateway API duration (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`), in milliseconds.
pub(crate) fn parse_duration(d: &str) -> Option<u64> {
    let (mut total, mut parts, mut rest) = (0u64, 0, d);
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += n * unit;
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}

fn duration(out: &mut Findings, at: &str, d: &str) -> Option<u64> {
    let ms = parse_duration(d);
    if ms.is_none() {
        out.push(
            at,
            format!("{d:?} is not a Gateway API duration (e.g. 10s, 1m30s, 500ms)"),
        );
    }
    ms
}
