//! The Gateway API schema and CEL rules for the fields we implement, checked on
//! objects that did not pass through an API server with the upstream CRDs (files,
//! `meshctl analyze`, or our own CRDs, which carry no CEL). Each finding is
//! `(field path, message naming the bad value)`; an object with findings is
//! rejected as a whole, as the API server would have refused it.
//!
//! Route rules are in [`super::validate_route`] (HTTPRoute) and
//! [`super::validate_grpc`] (GRPCRoute), the shared format checks in
//! [`super::findings`]; the other kinds are here.

pub use super::findings::Finding;
use super::findings::{is_subdomain, Findings};
use super::gateway::{protocol, FromNamespaces, GatewayClassSpec, GatewaySpec, TlsMode};
use super::kinds::GatewayApiResource;
use super::referencegrant::ReferenceGrantSpec;
use super::tlsroute::StreamRouteRule;
use super::{validate_grpc, validate_route};
use std::collections::BTreeSet;

/// All rule violations of one object; empty when valid.
pub fn validate(r: &GatewayApiResource) -> Vec<Finding> {
    let mut out = Findings::default();
    match r {
        GatewayApiResource::GatewayClass(c) => gateway_class(&mut out, &c.spec),
        GatewayApiResource::Gateway(g) => gateway(&mut out, &g.spec),
        GatewayApiResource::HTTPRoute(h) => validate_route::http_route(&mut out, &h.spec),
        GatewayApiResource::GRPCRoute(g) => validate_grpc::grpc_route(&mut out, &g.spec),
        GatewayApiResource::TLSRoute(t) => {
            out.parent_refs("spec.parentRefs", &t.spec.parent_refs);
            out.hostnames("spec.hostnames", &t.spec.hostnames);
            stream_rules(&mut out, &t.spec.rules);
        }
        GatewayApiResource::TCPRoute(t) => {
            out.parent_refs("spec.parentRefs", &t.spec.parent_refs);
            stream_rules(&mut out, &t.spec.rules);
        }
        GatewayApiResource::ReferenceGrant(g) => reference_grant(&mut out, &g.spec),
    }
    out.0
}

fn gateway_class(out: &mut Findings, s: &GatewayClassSpec) {
    let c = &s.controller_name;
    let valid = c.split_once('/').is_some_and(|(domain, path)| {
        is_subdomain(domain)
            && !path.is_empty()
            && path
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:".contains(ch))
    });
    if !valid || c.len() > 253 {
        out.push(
            "spec.controllerName",
            format!(
                "{c:?} is not a domain-prefixed path (e.g. {:?})",
                super::common::CONTROLLER_NAME
            ),
        );
    }
    if let Some(d) = &s.description {
        if d.chars().count() > 64 {
            out.push(
                "spec.description",
                "description is longer than 64 characters",
            );
        }
    }
}

fn gateway(out: &mut Findings, s: &GatewaySpec) {
    out.object_name("spec.gatewayClassName", &s.gateway_class_name);
    out.min_items("spec.listeners", s.listeners.len(), 1);
    out.max_items("spec.listeners", s.listeners.len(), 64);
    let mut names = BTreeSet::new();
    let mut combos = BTreeSet::new();
    for (i, l) in s.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        out.section_name(&format!("{at}.name"), &l.name);
        if !names.insert(&l.name) {
            out.push(
                format!("{at}.name"),
                format!(
                    "listener name {:?} is used twice; names must be unique",
                    l.name
                ),
            );
        }
        out.port(&format!("{at}.port"), l.port);
        let p = l.protocol.as_str();
        if !listener_protocol_ok(p) {
            out.push(
                format!("{at}.protocol"),
                format!(
                    "protocol {p:?} is not HTTP, HTTPS, TLS, TCP, UDP or a domain-prefixed name"
                ),
            );
        }
        if let Some(h) = &l.hostname {
            if matches!(p, protocol::TCP | protocol::UDP) {
                out.push(
                    format!("{at}.hostname"),
                    format!("hostname {h:?} must not be set for protocol {p}"),
                );
            }
            out.hostname(&format!("{at}.hostname"), h, true);
        }
        if !combos.insert((l.port, p, l.hostname.as_deref())) {
            out.push(
                at.clone(),
                format!(
                    "port {}, protocol {p} and hostname {:?} repeat another listener's; the combination must be unique",
                    l.port,
                    l.hostname.as_deref().unwrap_or("")
                ),
            );
        }
        match (&l.tls, p) {
            (Some(_), protocol::HTTP | protocol::TCP | protocol::UDP) => out.push(
                format!("{at}.tls"),
                format!("tls must not be set for protocol {p}"),
            ),
            (None, protocol::HTTPS | protocol::TLS) => out.push(
                format!("{at}.tls"),
                format!("tls is required for protocol {p}"),
            ),
            (Some(t), _) => {
                let tat = format!("{at}.tls");
                if t.mode == TlsMode::Terminate
                    && t.certificate_refs.is_empty()
                    && t.options.is_empty()
                {
                    out.push(
                        format!("{tat}.certificateRefs"),
                        "certificateRefs (or options) are required when tls mode is Terminate",
                    );
                }
                if t.mode == TlsMode::Passthrough && p == protocol::HTTPS {
                    out.push(
                        format!("{tat}.mode"),
                        "an HTTPS listener terminates TLS; use protocol TLS for Passthrough",
                    );
                }
                out.max_items(
                    &format!("{tat}.certificateRefs"),
                    t.certificate_refs.len(),
                    64,
                );
                for (j, c) in t.certificate_refs.iter().enumerate() {
                    out.object_name(&format!("{tat}.certificateRefs[{j}].name"), &c.name);
                    if let Some(ns) = &c.namespace {
                        out.namespace(&format!("{tat}.certificateRefs[{j}].namespace"), ns);
                    }
                }
            }
            _ => {}
        }
        if let Some(ar) = &l.allowed_routes {
            let aat = format!("{at}.allowedRoutes");
            if ar.namespaces.from == FromNamespaces::Selector && ar.namespaces.selector.is_none() {
                out.push(
                    format!("{aat}.namespaces.selector"),
                    "selector is required when from is Selector",
                );
            }
            out.max_items(&format!("{aat}.kinds"), ar.kinds.len(), 8);
            for (j, k) in ar.kinds.iter().enumerate() {
                if k.kind.is_empty() {
                    out.push(format!("{aat}.kinds[{j}].kind"), "kind is required");
                }
            }
        }
    }
    out.max_items("spec.addresses", s.addresses.len(), 16);
    for (i, a) in s.addresses.iter().enumerate() {
        let at = format!("spec.addresses[{i}].value");
        match a.type_.as_str() {
            "IPAddress" if a.value.parse::<std::net::IpAddr>().is_err() => {
                out.push(at, format!("{:?} is not an IP address", a.value));
            }
            "Hostname" => out.hostname(&at, &a.value, false),
            _ => {}
        }
    }
}

fn listener_protocol_ok(p: &str) -> bool {
    match p.split_once('/') {
        Some((domain, name)) => {
            is_subdomain(domain)
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric())
        }
        None => {
            !p.is_empty()
                && p.len() <= 255
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        }
    }
}

fn stream_rules(out: &mut Findings, rules: &[StreamRouteRule]) {
    out.min_items("spec.rules", rules.len(), 1);
    out.max_items("spec.rules", rules.len(), 16);
    let mut names = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(n) = &r.name {
            out.section_name(&format!("{at}.name"), n);
            if !names.insert(n) {
                out.push(
                    format!("{at}.name"),
                    format!("rule name {n:?} is used twice"),
                );
            }
        }
        out.min_items(&format!("{at}.backendRefs"), r.backend_refs.len(), 1);
        out.max_items(&format!("{at}.backendRefs"), r.backend_refs.len(), 16);
        for (j, b) in r.backend_refs.iter().enumerate() {
            out.backend_ref(&format!("{at}.backendRefs[{j}]"), b);
        }
    }
}

fn reference_grant(out: &mut Findings, s: &ReferenceGrantSpec) {
    out.min_items("spec.from", s.from.len(), 1);
    out.max_items("spec.from", s.from.len(), 16);
    out.min_items("spec.to", s.to.len(), 1);
    out.max_items("spec.to", s.to.len(), 16);
    for (i, f) in s.from.iter().enumerate() {
        if f.kind.is_empty() {
            out.push(format!("spec.from[{i}].kind"), "kind is required");
        }
        out.namespace(&format!("spec.from[{i}].namespace"), &f.namespace);
    }
    for (i, t) in s.to.iter().enumerate() {
        if t.kind.is_empty() {
            out.push(format!("spec.to[{i}].kind"), "kind is required");
        }
        if let Some(n) = &t.name {
            out.object_name(&format!("spec.to[{i}].name"), n);
        }
    }
}
