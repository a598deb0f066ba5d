//! Single-resource checks of Sidecar: ingress and egress listeners (ports,
//! protocols, capture modes, `namespace/host` egress hosts) and the outbound
//! traffic policy.

use crate::validate::checks::*;
use crate::validate::report::Report;
use mesh_api::networking::*;

/// Checks a Sidecar spec: ingress listeners, egress listeners, then the
/// outbound traffic policy mode.
pub fn sidecar(r: &mut Report<'_>, s: &SidecarSpec) {
    for (i, ing) in s.ingress.iter().enumerate() {
        let p = format!("spec.ingress[{i}]");
        match &ing.port {
            None => r.error(format!("{p}.port"), (), "ingress listener must have a port"),
            Some(pt) => {
                port(r, &format!("{p}.port.number"), pt.number);
                protocol(r, &format!("{p}.port.protocol"), pt.protocol.as_ref());
            }
        }
        one_of(
            r,
            &format!("{p}.captureMode"),
            ing.capture_mode.as_ref(),
            &["DEFAULT", "IPTABLES", "NONE"],
        );
    }
    for (i, eg) in s.egress.iter().enumerate() {
        let p = format!("spec.egress[{i}]");
        if eg.hosts.is_empty() {
            r.error(
                format!("{p}.hosts"),
                (),
                "egress listener must have at least one host",
            );
        }
        for (j, h) in eg.hosts.iter().enumerate() {
            let hp = format!("{p}.hosts[{j}]");
            match h.split_once('/') {
                None => r.error(&hp, h, "egress host must be namespace/dnsName"),
                Some((ns, name)) => {
                    if !(ns == "." || ns == "*" || ns == "~" || dns1123_label(ns)) {
                        r.error(
                            &hp,
                            h,
                            "namespace part must be '.', '*', '~' or a namespace name",
                        );
                    }
                    host(r, &hp, name, true);
                }
            }
        }
        if let Some(pt) = &eg.port {
            port(r, &format!("{p}.port.number"), pt.number);
            protocol(r, &format!("{p}.port.protocol"), pt.protocol.as_ref());
        }
        one_of(
            r,
            &format!("{p}.captureMode"),
            eg.capture_mode.as_ref(),
            &["DEFAULT", "IPTABLES", "NONE"],
        );
    }
    if let Some(o) = &s.outbound_traffic_policy {
        one_of(
            r,
            "spec.outboundTrafficPolicy.mode",
            o.mode.as_ref(),
            &["REGISTRY_ONLY", "ALLOW_ANY"],
        );
    }
}
