//! Single-resource checks of ServiceEntry: hosts, addresses, location and
//! resolution, ports, and endpoints (whose address form depends on the
//! resolution).

use crate::validate::checks::*;
use crate::validate::report::Report;
use mesh_api::networking::*;

/// Checks a ServiceEntry spec: hosts and addresses, enums, ports, then the
/// endpoints against the resolution and the declared port names.
pub fn service_entry(r: &mut Report<'_>, s: &ServiceEntrySpec) {
    if s.hosts.is_empty() {
        r.error(
            "spec.hosts",
            (),
            "service entry must have at least one host",
        );
    }
    for (i, h) in s.hosts.iter().enumerate() {
        host(r, &format!("spec.hosts[{i}]"), h, true);
        if h == "*" {
            r.error(
                format!("spec.hosts[{i}]"),
                h,
                "host '*' is not allowed in a service entry",
            );
        }
    }
    unique(r, "spec.hosts", s.hosts.iter().map(String::as_str), "host");
    for (i, a) in s.addresses.iter().enumerate() {
        cidr(r, &format!("spec.addresses[{i}]"), a);
    }
    export_to(r, "spec.exportTo", &s.export_to);
    one_of(
        r,
        "spec.location",
        s.location.as_ref(),
        &["MESH_EXTERNAL", "MESH_INTERNAL"],
    );
    one_of(
        r,
        "spec.resolution",
        s.resolution.as_ref(),
        &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"],
    );
    if s.ports.is_empty() {
        r.error(
            "spec.ports",
            (),
            "service entry must have at least one port",
        );
    }
    let mut nums = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, pt) in s.ports.iter().enumerate() {
        let p = format!("spec.ports[{i}]");
        port(r, &format!("{p}.number"), pt.number);
        if !nums.insert(pt.number) {
            r.error(format!("{p}.number"), pt.number, "duplicate port number");
        }
        protocol(r, &format!("{p}.protocol"), pt.protocol.as_ref());
        match &pt.name {
            None => r.error(format!("{p}.name"), (), "port name is required"),
            Some(n) if !names.insert(n.clone()) => {
                r.error(format!("{p}.name"), n, "duplicate port name")
            }
            _ => {}
        }
        if let Some(t) = pt.target_port {
            port(r, &format!("{p}.targetPort"), t);
        }
    }
    let resolution = s.resolution.as_deref().unwrap_or("NONE");
    if resolution == "STATIC" && s.endpoints.is_empty() && s.workload_selector.is_none() {
        r.error(
            "spec.endpoints",
            (),
            "resolution STATIC needs endpoints or a workloadSelector",
        );
    }
    if !s.endpoints.is_empty() && s.workload_selector.is_some() {
        r.error(
            "spec.workloadSelector",
            (),
            "endpoints and workloadSelector are mutually exclusive",
        );
    }
    if resolution == "DNS" && s.endpoints.is_empty() {
        for (i, h) in s.hosts.iter().enumerate() {
            if h.starts_with('*') {
                r.error(
                    format!("spec.hosts[{i}]"),
                    h,
                    "wildcard host cannot be resolved with DNS",
                );
            }
        }
    }
    for (i, ep) in s.endpoints.iter().enumerate() {
        let p = format!("spec.endpoints[{i}]");
        match ep.address.as_deref() {
            None | Some("") => r.error(format!("{p}.address"), (), "endpoint address is required"),
            Some(a)
                if resolution == "STATIC"
                    && a.parse::<std::net::IpAddr>().is_err()
                    && !a.starts_with("unix://") =>
            {
                r.error(
                    format!("{p}.address"),
                    a,
                    "resolution STATIC needs IP addresses",
                )
            }
            Some(a)
                if resolution != "STATIC"
                    && !valid_host(a)
                    && a.parse::<std::net::IpAddr>().is_err() =>
            {
                r.error(
                    format!("{p}.address"),
                    a,
                    "endpoint address must be an IP or DNS name",
                )
            }
            _ => {}
        }
        for (name, num) in &ep.ports {
            if !names.contains(name) {
                r.error(
                    format!("{p}.ports.{name}"),
                    name,
                    "port name does not match any port of the service entry",
                );
            }
            port(r, &format!("{p}.ports.{name}"), *num);
        }
    }
}
