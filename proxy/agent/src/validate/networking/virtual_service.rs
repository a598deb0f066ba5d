//! Single-resource checks of VirtualService, following Istio's webhook rules:
//! hosts, gateway references, and each HTTP, TLS and TCP route. HTTP routes
//! have their own file ([`super::http_route`]); the destinations every kind of
//! route sends to are checked in [`super::route_destination`].

use super::http_route::http_route;
use super::route_destination::route_destinations;
use crate::validate::checks::*;
use crate::validate::report::Report;
use mesh_api::networking::*;

/// Checks a VirtualService spec: hosts, gateway references, then each route.
pub fn virtual_service(r: &mut Report<'_>, s: &VirtualServiceSpec) {
    if s.hosts.is_empty() {
        r.error(
            "spec.hosts",
            (),
            "virtual service must have at least one host",
        );
    }
    for (i, h) in s.hosts.iter().enumerate() {
        host(r, &format!("spec.hosts[{i}]"), h, true);
    }
    unique(r, "spec.hosts", s.hosts.iter().map(String::as_str), "host");
    for (i, g) in s.gateways.iter().enumerate() {
        gateway_ref(r, &format!("spec.gateways[{i}]"), g);
    }
    for (i, h) in s.http.iter().enumerate() {
        for (j, m) in h.match_.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                gateway_ref(r, &format!("spec.http[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    for (i, t) in s.tls.iter().enumerate() {
        for (j, m) in t.match_.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                gateway_ref(r, &format!("spec.tls[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    for (i, t) in s.tcp.iter().enumerate() {
        for (j, m) in t.match_.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                gateway_ref(r, &format!("spec.tcp[{i}].match[{j}].gateways[{k}]"), g);
            }
        }
    }
    export_to(r, "spec.exportTo", &s.export_to);
    if s.http.is_empty() && s.tls.is_empty() && s.tcp.is_empty() {
        r.error(
            "spec",
            (),
            "http, tls or tcp must be provided in a virtual service",
        );
    }
    for (i, h) in s.http.iter().enumerate() {
        http_route(r, &format!("spec.http[{i}]"), h);
    }
    for (i, t) in s.tls.iter().enumerate() {
        tls_route(r, &format!("spec.tls[{i}]"), t);
    }
    for (i, t) in s.tcp.iter().enumerate() {
        tcp_route(r, &format!("spec.tcp[{i}]"), t);
    }
}

/// A TLS route: at least one match, each naming at least one SNI host.
fn tls_route(r: &mut Report<'_>, p: &str, t: &TlsRoute) {
    if t.match_.is_empty() {
        r.error(
            format!("{p}.match"),
            (),
            "TLS route must have at least one match",
        );
    }
    for (j, m) in t.match_.iter().enumerate() {
        let mp = format!("{p}.match[{j}]");
        if m.sni_hosts.is_empty() {
            r.error(
                format!("{mp}.sniHosts"),
                (),
                "TLS match must have at least one SNI host",
            );
        }
        for (k, h) in m.sni_hosts.iter().enumerate() {
            host(r, &format!("{mp}.sniHosts[{k}]"), h, true);
        }
        for (k, c) in m.destination_subnets.iter().enumerate() {
            cidr(r, &format!("{mp}.destinationSubnets[{k}]"), c);
        }
        if let Some(pt) = m.port {
            port(r, &format!("{mp}.port"), pt);
        }
    }
    route_destinations(r, p, t.route.iter().map(|d| (&d.destination, d.weight)));
}

/// A TCP route: its matches' subnets and port, then its destinations.
fn tcp_route(r: &mut Report<'_>, p: &str, t: &TcpRoute) {
    for (j, m) in t.match_.iter().enumerate() {
        let mp = format!("{p}.match[{j}]");
        for (k, c) in m.destination_subnets.iter().enumerate() {
            cidr(r, &format!("{mp}.destinationSubnets[{k}]"), c);
        }
        if let Some(c) = &m.source_subnet {
            cidr(r, &format!("{mp}.sourceSubnet"), c);
        }
        if let Some(pt) = m.port {
            port(r, &format!("{mp}.port"), pt);
        }
    }
    route_destinations(r, p, t.route.iter().map(|d| (&d.destination, d.weight)));
}

/// A VirtualService `gateways` entry: `mesh`, `name` or `namespace/name`.
fn gateway_ref(r: &mut Report<'_>, path: &str, g: &str) {
    let ok = g == "mesh"
        || match g.split_once('/') {
            Some((ns, name)) => dns1123_label(ns) && dns1123_subdomain_like(name),
            None => dns1123_subdomain_like(g),
        };
    if !ok {
        r.error(path, g, "gateway must be 'mesh' or [namespace/]name");
    }
}
