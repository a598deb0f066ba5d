//! Single-resource checks of one VirtualService HTTP route: its matches, its
//! single action (route, redirect, direct response or delegate), and the
//! policies around it (timeouts, retries, fault injection, rewrite, mirror,
//! CORS). Values the proxy compiles are checked with its own parsers
//! ([`crate::validate::checks`]).

use super::route_destination::{destination, route_destinations};
use crate::validate::checks::*;
use crate::validate::report::Report;
use mesh_api::networking::*;

/// Checks one HTTP route at `p` (`spec.http[i]`): matches, exactly one action,
/// then the policies around it.
pub fn http_route(r: &mut Report<'_>, p: &str, h: &HttpRoute) {
    for (j, m) in h.match_.iter().enumerate() {
        http_match(r, &format!("{p}.match[{j}]"), m);
    }
    let actions = [
        !h.route.is_empty(),
        h.redirect.is_some(),
        h.direct_response.is_some(),
        h.delegate.is_some(),
    ];
    match actions.iter().filter(|b| **b).count() {
        0 => r.error(
            p,
            (),
            "HTTP route must have one of route, redirect, directResponse or delegate",
        ),
        1 => {}
        _ => r.error(
            p,
            (),
            "route, redirect, directResponse and delegate are mutually exclusive",
        ),
    }
    if h.redirect.is_some() && h.rewrite.is_some() {
        r.error(
            format!("{p}.rewrite"),
            (),
            "rewrite cannot be combined with redirect",
        );
    }
    route_destinations(r, p, h.route.iter().map(|d| (&d.destination, d.weight)));
    duration(r, &format!("{p}.timeout"), h.timeout.as_ref());
    if let Some(rt) = &h.retries {
        if rt.attempts < 0 {
            r.error(
                format!("{p}.retries.attempts"),
                rt.attempts,
                "attempts cannot be negative",
            );
        }
        duration(
            r,
            &format!("{p}.retries.perTryTimeout"),
            rt.per_try_timeout.as_ref(),
        );
    }
    if let Some(f) = &h.fault {
        fault(r, p, f);
    }
    if let Some(rd) = &h.redirect {
        if let Some(c) = rd.redirect_code {
            if !(300..=399).contains(&c) {
                r.error(
                    format!("{p}.redirect.redirectCode"),
                    c,
                    "redirect code must be 3xx",
                );
            }
        }
        if let Some(pt) = rd.port {
            port(r, &format!("{p}.redirect.port"), pt);
        }
    }
    if let Some(dr) = &h.direct_response {
        if !(200..=599).contains(&dr.status) {
            r.error(
                format!("{p}.directResponse.status"),
                dr.status,
                "status must be in [200, 599]",
            );
        }
    }
    if let Some(rw) = &h.rewrite {
        if let Some(rr) = &rw.uri_regex_rewrite {
            regex(r, &format!("{p}.rewrite.uriRegexRewrite.match"), &rr.match_);
            if rw.uri.is_some() {
                r.error(
                    format!("{p}.rewrite"),
                    (),
                    "uri and uriRegexRewrite are mutually exclusive",
                );
            }
        }
    }
    if let Some(m) = &h.mirror {
        destination(r, &format!("{p}.mirror"), m);
    }
    if let Some(m) = &h.mirror_percentage {
        percent(r, &format!("{p}.mirrorPercentage.value"), m.value);
    }
    if let Some(c) = &h.cors_policy {
        for (k, o) in c.allow_origins.iter().enumerate() {
            string_match(r, &format!("{p}.corsPolicy.allowOrigins[{k}]"), o, false);
        }
        duration(r, &format!("{p}.corsPolicy.maxAge"), c.max_age.as_ref());
    }
}

/// One match: the string matches compile as the proxy compiles them, header
/// names are lower case (query parameter names may be any case).
fn http_match(r: &mut Report<'_>, mp: &str, m: &HttpMatchRequest) {
    for (f, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            // The proxy compiles `uri` in the ignoreUriCase form when it is set.
            let ic = f == "uri" && m.ignore_uri_case == Some(true);
            string_match(r, &format!("{mp}.{f}"), sm, ic);
        }
    }
    for (f, map) in [
        ("headers", &m.headers),
        ("queryParams", &m.query_params),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (k, sm) in map {
            if k.is_empty() {
                r.error(format!("{mp}.{f}"), k, "header name must not be empty");
            }
            if f != "queryParams" && k.chars().any(|c| c.is_ascii_uppercase()) {
                r.error(format!("{mp}.{f}.{k}"), k, "header name must be lower case");
            }
            // An empty `withoutHeaders` matcher means "header absent": legal,
            // and nothing to compile.
            if sm.exact.is_none()
                && sm.prefix.is_none()
                && sm.regex.is_none()
                && f == "withoutHeaders"
            {
                continue;
            }
            string_match(r, &format!("{mp}.{f}.{k}"), sm, false);
        }
    }
    if let Some(pt) = m.port {
        port(r, &format!("{mp}.port"), pt);
    }
}

/// Fault injection: a delay with its fixedDelay, an abort with exactly one
/// status, each percentage in [0, 100].
fn fault(r: &mut Report<'_>, p: &str, f: &HttpFaultInjection) {
    if f.delay.is_none() && f.abort.is_none() {
        r.error(
            format!("{p}.fault"),
            (),
            "fault must have a delay or an abort",
        );
    }
    if let Some(d) = &f.delay {
        if d.fixed_delay.is_none() {
            r.error(
                format!("{p}.fault.delay.fixedDelay"),
                (),
                "fixedDelay is required",
            );
        }
        duration(
            r,
            &format!("{p}.fault.delay.fixedDelay"),
            d.fixed_delay.as_ref(),
        );
        if let Some(pc) = &d.percentage {
            percent(r, &format!("{p}.fault.delay.percentage.value"), pc.value);
        }
    }
    if let Some(a) = &f.abort {
        match (a.http_status, &a.grpc_status) {
            (Some(s), None) if !(200..=599).contains(&s) => r.error(
                format!("{p}.fault.abort.httpStatus"),
                s,
                "HTTP status must be in [200, 599]",
            ),
            (None, None) => r.error(
                format!("{p}.fault.abort"),
                (),
                "abort needs httpStatus or grpcStatus",
            ),
            (Some(_), Some(_)) => r.error(
                format!("{p}.fault.abort"),
                (),
                "httpStatus and grpcStatus are mutually exclusive",
            ),
            _ => {}
        }
        if let Some(pc) = &a.percentage {
            percent(r, &format!("{p}.fault.abort.percentage.value"), pc.value);
        }
    }
}
