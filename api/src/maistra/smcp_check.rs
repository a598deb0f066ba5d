//! Checks of a ServiceMeshControlPlane spec: [`SmcpSpec::validate`] (the
//! applied fields, errors naming the field path and value) and
//! [`field_report`] (which fields as written take effect and which are
//! accepted but ignored, for the status and `meshctl analyze`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::smcp::{bad, SmcpError, SmcpGatewayService, SmcpSpec};

/// The spec paths this mesh applies. A path is applied when it is listed; a
/// field on the way to a listed path is walked into; anything else is ignored.
pub const APPLIED: &[&str] = &[
    "version",
    "tracing.type",
    "tracing.sampling",
    "proxy.accessLogging.file.name",
    "proxy.accessLogging.file.encoding",
    "proxy.accessLogging.file.format",
    "proxy.networking.trafficControl.outbound.policy",
    "proxy.networking.trafficControl.outbound.includedIPRanges",
    "proxy.networking.trafficControl.outbound.excludedIPRanges",
    "proxy.networking.trafficControl.outbound.excludedPorts",
    "proxy.networking.trafficControl.inbound.includedPorts",
    "proxy.networking.trafficControl.inbound.excludedPorts",
    "gateways.enabled",
    "gateways.ingress.enabled",
    "gateways.ingress.service.type",
    "gateways.ingress.service.loadBalancerIP",
    "gateways.ingress.service.externalTrafficPolicy",
    "gateways.ingress.service.ports",
    "gateways.egress.enabled",
    "gateways.egress.service.type",
    "gateways.egress.service.loadBalancerIP",
    "gateways.egress.service.externalTrafficPolicy",
    "gateways.egress.service.ports",
    "security.dataPlane.mtls",
    // Read by the membership reconciler (NetworkPolicies per member namespace).
    "security.manageNetworkPolicy",
    "addons.jaeger.name",
];

/// Which spec fields took effect and which were accepted but ignored, as
/// `spec.`-prefixed paths in input order (deepest unknown field named once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldReport {
    pub applied: Vec<String>,
    pub ignored: Vec<String>,
}

/// Walks the spec as written against [`APPLIED`].
pub fn field_report(spec: &SmcpSpec) -> FieldReport {
    let mut r = FieldReport::default();
    if let Ok(Value::Object(m)) = serde_json::to_value(spec) {
        walk(&m, "", &mut r);
    }
    // `Stackdriver` tracing is accepted but exports nothing here.
    if let Some(t) = spec.tracing.as_ref().and_then(|t| t.type_.as_deref()) {
        if t == "Stackdriver" {
            r.applied.retain(|p| p != "spec.tracing.type");
            r.ignored.push("spec.tracing.type".into());
        }
    }
    r
}

fn walk(m: &serde_json::Map<String, Value>, prefix: &str, r: &mut FieldReport) {
    for (k, v) in m {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if APPLIED.contains(&path.as_str()) {
            r.applied.push(format!("spec.{path}"));
            continue;
        }
        let inner = format!("{path}.");
        match v {
            Value::Object(child) if APPLIED.iter().any(|a| a.starts_with(&inner)) => {
                walk(child, &path, r)
            }
            _ => r.ignored.push(format!("spec.{path}")),
        }
    }
}

const TRACING_TYPES: [&str; 4] = ["None", "Jaeger", "Zipkin", "Stackdriver"];

impl SmcpSpec {
    /// The tracing type in force: `None` without a `tracing` block, else the
    /// given type (OSSM's default `Jaeger` when only `sampling` is given).
    pub fn tracing_type(&self) -> &str {
        match &self.tracing {
            None => "None",
            Some(t) => t.type_.as_deref().unwrap_or("Jaeger"),
        }
    }

    /// Checks the applied fields; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SmcpError> {
        if let Some(t) = &self.tracing {
            if let Some(ty) = &t.type_ {
                if !TRACING_TYPES.contains(&ty.as_str()) {
                    return Err(bad(
                        "spec.tracing.type",
                        ty,
                        "is not a tracing type (None, Jaeger, Zipkin, Stackdriver)",
                    ));
                }
            }
            if let Some(s) = t.sampling {
                if !(0..=10000).contains(&s) {
                    return Err(bad(
                        "spec.tracing.sampling",
                        s,
                        "must be 0-10000 (0.01 % steps, 10000 = 100 %)",
                    ));
                }
            }
        }
        if let Some(f) = self
            .proxy
            .as_ref()
            .and_then(|p| p.access_logging.as_ref())
            .and_then(|a| a.file.as_ref())
        {
            if let Some(e) = &f.encoding {
                if e != "JSON" && e != "TEXT" {
                    return Err(bad(
                        "spec.proxy.accessLogging.file.encoding",
                        e,
                        "must be TEXT or JSON",
                    ));
                }
            }
        }
        if let Some(tc) = self
            .proxy
            .as_ref()
            .and_then(|p| p.networking.as_ref())
            .and_then(|n| n.traffic_control.as_ref())
        {
            let base = "spec.proxy.networking.trafficControl";
            if let Some(o) = &tc.outbound {
                if let Some(p) = &o.policy {
                    if p != "ALLOW_ANY" && p != "REGISTRY_ONLY" {
                        return Err(bad(
                            &format!("{base}.outbound.policy"),
                            p,
                            "must be ALLOW_ANY or REGISTRY_ONLY",
                        ));
                    }
                }
                ip_ranges(
                    &format!("{base}.outbound.includedIPRanges"),
                    &o.included_ip_ranges,
                    true,
                )?;
                ip_ranges(
                    &format!("{base}.outbound.excludedIPRanges"),
                    &o.excluded_ip_ranges,
                    false,
                )?;
                ports(
                    &format!("{base}.outbound.excludedPorts"),
                    &o.excluded_ports,
                    false,
                )?;
            }
            if let Some(i) = &tc.inbound {
                ports(
                    &format!("{base}.inbound.includedPorts"),
                    &i.included_ports,
                    true,
                )?;
                ports(
                    &format!("{base}.inbound.excludedPorts"),
                    &i.excluded_ports,
                    false,
                )?;
            }
        }
        if let Some(g) = &self.gateways {
            for (name, gw) in [("ingress", &g.ingress), ("egress", &g.egress)] {
                if let Some(s) = gw.as_ref().and_then(|g| g.service.as_ref()) {
                    check_service(&format!("spec.gateways.{name}.service"), s)?;
                }
            }
        }
        if let Some(n) = self
            .addons
            .as_ref()
            .and_then(|a| a.jaeger.as_ref())
            .and_then(|j| j.name.as_ref())
        {
            if !crate::meshconfig::is_dns_label(n) {
                return Err(bad(
                    "spec.addons.jaeger.name",
                    n,
                    "must be a lower-case DNS label",
                ));
            }
        }
        Ok(())
    }
}

fn ip_ranges(field: &str, v: &Option<Vec<String>>, star: bool) -> Result<(), SmcpError> {
    for (i, s) in v.iter().flatten().enumerate() {
        if star && s == "*" {
            continue;
        }
        if s.parse::<ipnet::IpNet>().is_err() && s.parse::<std::net::IpAddr>().is_err() {
            return Err(bad(
                &format!("{field}[{i}]"),
                s,
                "is not a CIDR (e.g. 10.0.0.0/8)",
            ));
        }
    }
    Ok(())
}

/// A port list entry as a number: JSON numbers or numeric strings.
pub(crate) fn port_of(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse::<u64>().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p > 0)
}

fn ports(field: &str, v: &Option<Vec<Value>>, star: bool) -> Result<(), SmcpError> {
    for (i, p) in v.iter().flatten().enumerate() {
        if star && p.as_str() == Some("*") {
            continue;
        }
        if port_of(p).is_none() {
            let shown = p
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| p.to_string());
            return Err(bad(
                &format!("{field}[{i}]"),
                shown,
                "is not a port (1-65535)",
            ));
        }
    }
    Ok(())
}

fn check_service(field: &str, s: &SmcpGatewayService) -> Result<(), SmcpError> {
    if let Some(t) = &s.type_ {
        if !["ClusterIP", "NodePort", "LoadBalancer"].contains(&t.as_str()) {
            return Err(bad(
                &format!("{field}.type"),
                t,
                "must be ClusterIP, NodePort or LoadBalancer",
            ));
        }
    }
    if let Some(ip) = &s.load_balancer_ip {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(bad(
                &format!("{field}.loadBalancerIP"),
                ip,
                "is not an IP address",
            ));
        }
    }
    if let Some(p) = &s.external_traffic_policy {
        if p != "Cluster" && p != "Local" {
            return Err(bad(
                &format!("{field}.externalTrafficPolicy"),
                p,
                "must be Cluster or Local",
            ));
        }
    }
    let mut seen = BTreeMap::new();
    for (i, p) in s.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&p.port) {
            return Err(bad(
                &format!("{field}.ports[{i}].port"),
                p.port,
                "is not a port (1-65535)",
            ));
        }
        if let Some(prev) = seen.insert(p.port, i) {
            return Err(bad(
                &format!("{field}.ports[{i}].port"),
                p.port,
                format!("is already ports[{prev}]"),
            ));
        }
        match &p.target_port {
            None => {}
            Some(Value::String(s)) if !s.is_empty() && s.parse::<u64>().is_err() => {}
            Some(t) if port_of(t).is_some() => {}
            Some(t) => {
                return Err(bad(
                    &format!("{field}.ports[{i}].targetPort"),
                    t,
                    "is not a port (1-65535) or a port name",
                ))
            }
        }
    }
    Ok(())
}
