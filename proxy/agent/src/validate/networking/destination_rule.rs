//! Single-resource checks of DestinationRule: host, subsets, and the traffic
//! policy at the top, per subset and per port (load balancer, connection
//! pool, outlier detection). The client TLS part has its own file
//! ([`super::client_tls`]).

use super::client_tls::client_tls;
use crate::validate::checks::*;
use crate::validate::report::Report;
use mesh_api::networking::*;

const LB: [&str; 6] = [
    "UNSPECIFIED",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
    "LEAST_CONN",
];

/// Checks a DestinationRule spec: host, exportTo, the top traffic policy, then
/// each subset (name and traffic policy).
pub fn destination_rule(r: &mut Report<'_>, s: &DestinationRuleSpec) {
    host(r, "spec.host", &s.host, true);
    export_to(r, "spec.exportTo", &s.export_to);
    if let Some(tp) = &s.traffic_policy {
        traffic_policy(r, "spec.trafficPolicy", tp);
    }
    unique(
        r,
        "spec.subsets",
        s.subsets.iter().map(|x| x.name.as_str()),
        "subset name",
    );
    for (i, sub) in s.subsets.iter().enumerate() {
        let p = format!("spec.subsets[{i}]");
        if !dns1123_subdomain_like(&sub.name) {
            r.error(
                format!("{p}.name"),
                &sub.name,
                "subset name must be a DNS-1123 name",
            );
        }
        if let Some(tp) = &sub.traffic_policy {
            traffic_policy(r, &format!("{p}.trafficPolicy"), tp);
        }
    }
}

/// A traffic policy: its own parts, then each port-level setting (a port
/// number, given once) with the same parts.
fn traffic_policy(r: &mut Report<'_>, p: &str, tp: &TrafficPolicy) {
    policy_parts(
        r,
        p,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    let mut seen = std::collections::BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = format!("{p}.portLevelSettings[{i}]");
        match pl.port.as_ref().and_then(|x| x.number) {
            None => r.error(
                format!("{pp}.port"),
                (),
                "port-level settings need a port number",
            ),
            Some(n) => {
                port(r, &format!("{pp}.port.number"), n);
                if !seen.insert(n) {
                    r.error(
                        format!("{pp}.port.number"),
                        n,
                        "duplicate port-level settings for this port",
                    );
                }
            }
        }
        policy_parts(
            r,
            &pp,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
}

/// The parts a traffic policy and its port-level settings have in common.
fn policy_parts(
    r: &mut Report<'_>,
    p: &str,
    lb: Option<&LoadBalancerSettings>,
    cp: Option<&ConnectionPoolSettings>,
    od: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        one_of(
            r,
            &format!("{p}.loadBalancer.simple"),
            lb.simple.as_ref(),
            &LB,
        );
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            r.error(
                format!("{p}.loadBalancer"),
                (),
                "simple and consistentHash are mutually exclusive",
            );
        }
    }
    if let Some(cp) = cp {
        if let Some(t) = &cp.tcp {
            duration(
                r,
                &format!("{p}.connectionPool.tcp.connectTimeout"),
                t.connect_timeout.as_ref(),
            );
            duration(
                r,
                &format!("{p}.connectionPool.tcp.idleTimeout"),
                t.idle_timeout.as_ref(),
            );
            if t.max_connections.is_some_and(|m| m < 0) {
                r.error(
                    format!("{p}.connectionPool.tcp.maxConnections"),
                    t.max_connections,
                    "must not be negative",
                );
            }
        }
        if let Some(h) = &cp.http {
            duration(
                r,
                &format!("{p}.connectionPool.http.idleTimeout"),
                h.idle_timeout.as_ref(),
            );
            one_of(
                r,
                &format!("{p}.connectionPool.http.h2UpgradePolicy"),
                h.h2_upgrade_policy.as_ref(),
                &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"],
            );
        }
    }
    if let Some(od) = od {
        duration(
            r,
            &format!("{p}.outlierDetection.interval"),
            od.interval.as_ref(),
        );
        duration(
            r,
            &format!("{p}.outlierDetection.baseEjectionTime"),
            od.base_ejection_time.as_ref(),
        );
        for (f, v) in [
            ("maxEjectionPercent", od.max_ejection_percent),
            ("minHealthPercent", od.min_health_percent),
        ] {
            if let Some(v) = v {
                if !(0..=100).contains(&v) {
                    r.error(
                        format!("{p}.outlierDetection.{f}"),
                        v,
                        "must be in [0, 100]",
                    );
                }
            }
        }
    }
    if let Some(t) = tls {
        client_tls(r, &format!("{p}.tls"), t);
    }
}
