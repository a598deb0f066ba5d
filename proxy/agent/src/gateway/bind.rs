//! Which VirtualServices bind to which Gateway server, as Istio decides it:
//! the VirtualService names the Gateway (top level or in a `match`), is
//! exported to the gateway pod's namespace, one of its hosts intersects one of
//! the server's hosts whose `namespace/` part admits the VirtualService's
//! namespace, and it has routes of the kind the server serves.

use mesh_api::networking::VirtualServiceSpec;

/// Splits a server host into (namespace part, host): `*/h` and `h` are any
/// namespace (`*`), `./h` the Gateway's, `ns/h` that namespace.
pub fn split_host(h: &str) -> (&str, &str) {
    h.split_once('/').unwrap_or(("*", h))
}

/// Does the `namespace/` part of a server host written in Gateway namespace
/// `gw_ns` admit a VirtualService of namespace `vs_ns`?
pub fn ns_admits(part: &str, gw_ns: &str, vs_ns: &str) -> bool {
    match part {
        "*" => true,
        "." => vs_ns == gw_ns,
        n => vs_ns == n,
    }
}

/// Do two host patterns (each `*`, `*.suffix` or exact) share a host?
pub fn intersects(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a == "*" || b == "*" {
        return true;
    }
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(sa), None) => b.ends_with(sa) && b.len() > sa.len(),
        (None, Some(sb)) => a.ends_with(sb) && a.len() > sb.len(),
        (None, None) => a == b,
    }
}

/// A `gateways` entry in full `namespace/name` form (`mesh` stays `mesh`; a
/// bare name is the VirtualService's namespace).
pub fn full_name(g: &str, vs_ns: &str) -> String {
    if g == "mesh" || g.contains('/') {
        g.to_string()
    } else {
        format!("{vs_ns}/{g}")
    }
}

/// Every Gateway a VirtualService names, top level or in any `match`.
pub fn named_gateways(vs: &VirtualServiceSpec, vs_ns: &str) -> Vec<String> {
    let per_match = vs
        .http
        .iter()
        .flat_map(|h| h.match_.iter().flat_map(|m| m.gateways.iter()))
        .chain(
            vs.tls
                .iter()
                .flat_map(|t| t.match_.iter().flat_map(|m| m.gateways.iter())),
        )
        .chain(
            vs.tcp
                .iter()
                .flat_map(|t| t.match_.iter().flat_map(|m| m.gateways.iter())),
        );
    vs.gateways
        .iter()
        .chain(per_match)
        .map(|g| full_name(g, vs_ns))
        .collect()
}

/// The VirtualService with every `gateways` list in full form.
pub fn rewritten(vs: &VirtualServiceSpec, vs_ns: &str) -> VirtualServiceSpec {
    let mut out = vs.clone();
    let fix = |l: &mut Vec<String>| {
        for g in l.iter_mut() {
            *g = full_name(g, vs_ns);
        }
    };
    fix(&mut out.gateways);
    for h in &mut out.http {
        h.match_.iter_mut().for_each(|m| fix(&mut m.gateways));
    }
    for t in &mut out.tls {
        t.match_.iter_mut().for_each(|m| fix(&mut m.gateways));
    }
    for t in &mut out.tcp {
        t.match_.iter_mut().for_each(|m| fix(&mut m.gateways));
    }
    out
}

/// The kind of routes a server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Http,
    Tls,
    Tcp,
    /// AUTO_PASSTHROUGH: the SNI names the cluster, no VirtualService applies.
    None,
}

/// `http` for HTTP/HTTPS/HTTP2/GRPC (terminated), `tls` for PASSTHROUGH, `tcp`
/// for TCP and terminated TLS.
pub fn route_kind(protocol: &str, tls_mode: Option<&str>) -> RouteKind {
    match tls_mode {
        Some("AUTO_PASSTHROUGH") => RouteKind::None,
        Some("PASSTHROUGH") => RouteKind::Tls,
        _ if matches!(protocol, "HTTP" | "HTTPS" | "HTTP2" | "GRPC") => RouteKind::Http,
        _ => RouteKind::Tcp,
    }
}

/// Does the VirtualService have routes of this kind?
pub fn has_routes(vs: &VirtualServiceSpec, kind: RouteKind) -> bool {
    match kind {
        RouteKind::Http => !vs.http.is_empty(),
        RouteKind::Tls => !vs.tls.is_empty(),
        RouteKind::Tcp => !vs.tcp.is_empty(),
        RouteKind::None => false,
    }
}

/// Does some server host (as written, with its `namespace/` part) admit the
/// VirtualService's namespace and intersect one of its hosts (FQDNs)?
pub fn hosts_bind(server_hosts: &[String], gw_ns: &str, vs_ns: &str, vs_hosts: &[String]) -> bool {
    server_hosts.iter().any(|sh| {
        let (part, host) = split_host(sh);
        ns_admits(part, gw_ns, vs_ns) && vs_hosts.iter().any(|vh| intersects(host, vh))
    })
}

/// Destination hosts (as written) of every route and mirror.
pub fn destinations(s: &VirtualServiceSpec) -> Vec<String> {
    let http = s.http.iter().flat_map(|h| {
        h.route
            .iter()
            .map(|d| d.destination.host.clone())
            .chain(h.mirror.iter().map(|m| m.host.clone()))
    });
    let l4 = s
        .tcp
        .iter()
        .flat_map(|t| t.route.iter())
        .chain(s.tls.iter().flat_map(|t| t.route.iter()))
        .map(|d| d.destination.host.clone());
    http.chain(l4).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_intersect_both_ways() {
        assert!(intersects("*.example.com", "a.example.com"));
        assert!(intersects("a.example.com", "*.example.com"));
        assert!(intersects("*.example.com", "*.b.example.com"));
        assert!(intersects("*", "x"));
        assert!(!intersects("*.example.com", "example.com"));
        assert!(!intersects("a.example.com", "b.example.com"));
        assert!(intersects("A.example.com", "a.EXAMPLE.com"));
    }

    #[test]
    fn namespace_parts() {
        assert_eq!(split_host("foo.com"), ("*", "foo.com"));
        assert!(ns_admits(".", "istio-system", "istio-system"));
        assert!(!ns_admits(".", "istio-system", "default"));
        assert!(ns_admits("default", "istio-system", "default"));
        assert!(!ns_admits("prod", "istio-system", "default"));
    }
}
