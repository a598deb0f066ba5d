//! GRPCRoute rules: method matches (Exact names must be valid protobuf
//! identifiers, one of service/method required; RegularExpression must compile),
//! header matches and the four GRPCRoute filters, with the checks shared with
//! HTTPRoute from [`super::validate_route`].

use super::findings::Findings;
use super::grpcroute::{GRPCMethodMatchType, GRPCRouteFilter, GRPCRouteFilterType, GRPCRouteSpec};
use super::validate_route::{
    filter_body, header_filter, header_matches, mirror, regex, rule_names,
};
use std::collections::BTreeSet;

pub(crate) fn grpc_route(out: &mut Findings, s: &GRPCRouteSpec) {
    out.parent_refs("spec.parentRefs", &s.parent_refs);
    out.hostnames("spec.hostnames", &s.hostnames);
    out.max_items("spec.rules", s.rules.len(), 16);
    rule_names(out, s.rules.iter().map(|r| r.name.as_ref()));
    for (i, r) in s.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        out.max_items(&format!("{at}.matches"), r.matches.len(), 8);
        for (j, m) in r.matches.iter().enumerate() {
            let mat = format!("{at}.matches[{j}]");
            if let Some(mm) = &m.method {
                let mat = format!("{mat}.method");
                match mm.type_ {
                    GRPCMethodMatchType::Exact => {
                        if mm.service.is_none() && mm.method.is_none() {
                            out.push(mat.clone(), "one or both of service and method must be set");
                        }
                        if let Some(svc) = &mm.service {
                            let name = svc.strip_prefix('.').unwrap_or(svc);
                            if !name.split('.').all(grpc_ident) {
                                out.push(
                                    format!("{mat}.service"),
                                    format!("{svc:?} is not a valid gRPC service name"),
                                );
                            }
                        }
                        if let Some(m) = &mm.method {
                            if !grpc_ident(m) {
                                out.push(
                                    format!("{mat}.method"),
                                    format!("{m:?} is not a valid gRPC method name"),
                                );
                            }
                        }
                    }
                    GRPCMethodMatchType::RegularExpression => {
                        for (field, v) in [("service", &mm.service), ("method", &mm.method)] {
                            if let Some(v) = v {
                                regex(out, &format!("{mat}.{field}"), v);
                            }
                        }
                    }
                }
            }
            header_matches(out, &format!("{mat}.headers"), &m.headers);
        }
        grpc_filters(out, &format!("{at}.filters"), &r.filters);
        out.max_items(&format!("{at}.backendRefs"), r.backend_refs.len(), 16);
        for (j, b) in r.backend_refs.iter().enumerate() {
            let bat = format!("{at}.backendRefs[{j}]");
            out.backend_ref(&bat, &b.backend);
            grpc_filters(out, &format!("{bat}.filters"), &b.filters);
        }
    }
}

fn grpc_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn grpc_filters(out: &mut Findings, at: &str, filters: &[GRPCRouteFilter]) {
    use GRPCRouteFilterType as T;
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
            (T::ExtensionRef, "extensionRef", f.extension_ref.is_some()),
        ];
        filter_body(
            out,
            &fat,
            &format!("{:?}", f.type_),
            &present.map(|(t, n, p)| (t == f.type_, n, p)),
        );
        if matches!(
            f.type_,
            T::RequestHeaderModifier | T::ResponseHeaderModifier
        ) && !seen.insert(f.type_)
        {
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
        if let Some(e) = &f.extension_ref {
            out.object_name(&format!("{fat}.extensionRef.name"), &e.name);
        }
    }
}
