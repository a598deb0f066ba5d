//! The proxy's compiled configuration as rows, for `/config_dump` (`compiled`) and
//! `meshctl proxy-config`: what this sidecar actually runs on, read from the
//! current [`Snapshot`] rather than from the view it was sent, in the shape of
//! `istioctl proxy-config`'s tables (listeners, clusters, routes, endpoints).
//! Endpoint health and requests in flight come from the run-time table
//! ([`crate::state`]), which outlasts snapshots.
//! Pure: no I/O, so it is tested on compiled views directly.

use std::net::SocketAddr;

pub mod rows;

use crate::lb::LbPolicy;
use crate::snapshot::{Cluster, OutboundPolicy, Protocol, Snapshot};
use crate::state::Table;
use rows::{route_matches, vs_name};
pub use rows::{ClusterRow, Compiled, EndpointRow, ListenerRow, RouteRow, SecretRow};

/// The ports this proxy bound, for the listener rows.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub outbound: u16,
    pub inbound: u16,
    /// A gateway: no capture listeners, its own listeners instead.
    pub router: bool,
}

/// The view as the config dump shows it: every private key replaced by a
/// marker of its length.
pub fn redacted_view(view: &mesh_api::syncapi::ProxyView) -> mesh_api::syncapi::ProxyView {
    let mut v = view.clone();
    for l in v.gateway.iter_mut().flat_map(|g| g.listeners.iter_mut()) {
        for t in l.servers.iter_mut().filter_map(|s| s.tls.as_mut()) {
            if let Some(c) = t.credential.as_mut() {
                *c = c.redacted();
            }
        }
    }
    v
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http1 => "HTTP",
        Protocol::Http2 => "HTTP2",
        Protocol::Tcp => "TCP",
        Protocol::Unknown => "AUTO",
    }
}

fn lb_name(lb: &LbPolicy) -> &'static str {
    match lb {
        LbPolicy::LeastRequest => "LEAST_REQUEST",
        LbPolicy::RoundRobin => "ROUND_ROBIN",
        LbPolicy::Random => "RANDOM",
        LbPolicy::ConsistentHash(_) => "RING_HASH",
    }
}

fn cluster_row(c: &Cluster, subset: &str, dr: &str) -> ClusterRow {
    ClusterRow {
        name: c.name.to_string(),
        service_fqdn: c.host.to_string(),
        port: Some(c.port),
        subset: subset.to_string(),
        direction: "outbound".into(),
        type_: "EDS".into(),
        destination_rule: dr.to_string(),
        protocol: protocol_name(c.protocol).into(),
        lb_policy: lb_name(&c.lb).into(),
        connection_pool: c.limits.is_some(),
        outlier_detection: c.outlier.is_some(),
    }
}

fn static_row(name: &str, type_: &str) -> ClusterRow {
    ClusterRow {
        name: name.into(),
        service_fqdn: name.into(),
        port: None,
        subset: String::new(),
        direction: String::new(),
        type_: type_.into(),
        destination_rule: String::new(),
        protocol: "TCP".into(),
        lb_policy: if type_ == "ORIGINAL_DST" {
            "CLUSTER_PROVIDED".into()
        } else {
            String::new()
        },
        connection_pool: false,
        outlier_detection: false,
    }
}

fn endpoint_rows(c: &Cluster, table: &Table, out: &mut Vec<EndpointRow>) {
    for e in c.endpoints.iter() {
        let state = table.endpoint(&c.name, e.addr);
        out.push(EndpointRow {
            endpoint: e.addr.to_string(),
            status: "HEALTHY".into(),
            outlier_check: if state.is_some_and(|s| s.health.is_ejected()) {
                "FAILED"
            } else {
                "OK"
            }
            .into(),
            cluster: c.name.to_string(),
            active_requests: state.map_or(0, |s| s.active()),
        });
    }
}

/// The rows of a compiled snapshot, with the run-time state in `table`.
pub fn compile(snap: &Snapshot, table: &Table, ports: Ports) -> Compiled {
    let mut out = Compiled::default();
    if let Some(g) = &snap.gateway {
        crate::gateway::dump::rows(g, &mut out);
    }
    if !ports.router {
        capture_rows(snap, ports, &mut out);
    }
    cluster_rows(snap, table, ports, &mut out);
    out
}

fn capture_rows(snap: &Snapshot, ports: Ports, out: &mut Compiled) {
    out.listeners.push(ListenerRow {
        address: "0.0.0.0".into(),
        port: ports.outbound,
        match_: "ALL".into(),
        destination: match snap.outbound_policy {
            OutboundPolicy::AllowAny => "PassthroughCluster".into(),
            OutboundPolicy::RegistryOnly => "BlackHoleCluster".into(),
        },
    });
    out.listeners.push(ListenerRow {
        address: "0.0.0.0".into(),
        port: ports.inbound,
        match_: "ALL".into(),
        destination: "Inline Route: /* (inbound|virtualInbound)".into(),
    });
}

fn cluster_rows(snap: &Snapshot, table: &Table, ports: Ports, out: &mut Compiled) {
    let view = &snap.view;
    for c in snap.clusters() {
        let dr_host = if view.destination_rules.contains_key(c.host.as_ref()) {
            c.host.to_string()
        } else {
            String::new()
        };
        out.clusters.push(cluster_row(c, "", &dr_host));
        endpoint_rows(c, table, &mut out.endpoints);
        if let Some(dr) = view.destination_rules.get(c.host.as_ref()) {
            for s in &dr.subsets {
                if let Some(sc) = snap.destination(&c.host, Some(c.port), Some(&s.name), c.port) {
                    out.clusters.push(cluster_row(&sc, &s.name, &dr_host));
                    endpoint_rows(&sc, table, &mut out.endpoints);
                }
            }
        }
        let svc = view.services.iter().find(|s| *s.hostname == *c.host);
        let vips: Vec<&String> = svc
            .map(|s| s.addresses.iter().collect())
            .unwrap_or_default();
        let destination = if c.protocol.is_http() {
            format!("Route: {}:{}", c.host, c.port)
        } else {
            format!("Cluster: {}", c.name)
        };
        let match_ = match c.protocol {
            Protocol::Http1 | Protocol::Http2 => "App: HTTP",
            Protocol::Tcp => "ALL",
            Protocol::Unknown => "Trans: raw_buffer; App: HTTP TLS",
        };
        for vip in vips.into_iter().filter(|_| !ports.router) {
            out.listeners.push(ListenerRow {
                address: vip.clone(),
                port: c.port,
                match_: match_.into(),
                destination: destination.clone(),
            });
        }
        if c.protocol.is_http() && !ports.router {
            route_rows(snap, c, &mut out.routes);
        }
    }
    // Endpoints the registry lists as not ready: not in any cluster, shown unhealthy.
    for svc in &view.services {
        for p in &svc.ports {
            for e in svc.endpoints.iter().filter(|e| !e.ready) {
                let port = e
                    .ports
                    .get(&p.name)
                    .copied()
                    .or(p.target_port)
                    .unwrap_or(p.port);
                let addr = e
                    .address
                    .parse()
                    .map(|ip| SocketAddr::new(ip, port).to_string())
                    .unwrap_or_else(|_| format!("{}:{port}", e.address));
                out.endpoints.push(EndpointRow {
                    endpoint: addr,
                    status: "UNHEALTHY".into(),
                    outlier_check: "OK".into(),
                    cluster: format!("outbound|{}||{}", p.port, svc.hostname),
                    active_requests: 0,
                });
            }
        }
    }
    // istioctl's order: by service, port, subset; the static clusters last.
    out.clusters.sort_by(|a, b| {
        (&a.service_fqdn, a.port, &a.subset).cmp(&(&b.service_fqdn, b.port, &b.subset))
    });
    out.endpoints
        .sort_by(|a, b| (&a.cluster, &a.endpoint).cmp(&(&b.cluster, &b.endpoint)));
    out.clusters.push(static_row("BlackHoleCluster", "STATIC"));
    out.clusters
        .push(static_row("InboundPassthroughCluster", "ORIGINAL_DST"));
    out.clusters
        .push(static_row("PassthroughCluster", "ORIGINAL_DST"));
}

fn route_rows(snap: &Snapshot, c: &Cluster, out: &mut Vec<RouteRow>) {
    let short = c.host.split('.').take(2).collect::<Vec<_>>().join(".");
    let domains = vec![c.host.to_string(), short];
    let vhost = format!("{}:{}", c.host, c.port);
    let Some(routes) = snap.routes.for_host(&c.host) else {
        out.push(RouteRow {
            name: c.port.to_string(),
            vhost,
            domains,
            match_: "/*".into(),
            virtual_service: String::new(),
            destinations: vec![format!("{} (100)", c.name)],
        });
        return;
    };
    for r in routes.iter() {
        // A route bound to other ports does not apply to this virtual host.
        if !r.matches.is_empty()
            && r.matches
                .iter()
                .all(|m| m.port.is_some_and(|p| p != c.port))
        {
            continue;
        }
        let destinations = r
            .targets
            .iter()
            .map(|t| {
                let port = t.port.unwrap_or(c.port);
                let subset = t.subset.as_deref().unwrap_or("");
                format!("outbound|{port}|{subset}|{} ({})", t.host, t.weight)
            })
            .collect();
        for m in route_matches(r) {
            out.push(RouteRow {
                name: c.port.to_string(),
                vhost: vhost.clone(),
                domains: domains.clone(),
                match_: m,
                virtual_service: vs_name(&r.vs),
                destinations: Vec::clone(&destinations),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::syncapi::ProxyView;

    fn view() -> ProxyView {
        serde_json::from_value(serde_json::json!({
            "version": 7,
            "outboundTrafficPolicy": "REGISTRY_ONLY",
            "services": [{
                "hostname": "reviews.shop.svc.cluster.local", "namespace": "shop",
                "addresses": ["10.96.0.20"],
                "ports": [{"name": "http", "port": 9080, "protocol": "HTTP"}],
                "endpoints": [
                    {"address": "10.1.0.1", "ports": {"http": 9080}, "labels": {"version": "v1"}, "ready": true},
                    {"address": "10.1.0.2", "ports": {"http": 9080}, "labels": {"version": "v2"}, "ready": true},
                    {"address": "10.1.0.3", "ports": {"http": 9080}, "labels": {"version": "v2"}, "ready": false}]
            }, {
                "hostname": "db.shop.svc.cluster.local", "namespace": "shop",
                "addresses": ["10.96.0.30"],
                "ports": [{"name": "tcp-db", "port": 5432, "protocol": "TCP"}],
                "endpoints": [{"address": "10.1.0.9", "ports": {"tcp-db": 5432}, "ready": true}]
            }],
            "destinationRules": {"reviews.shop.svc.cluster.local": {
                "host": "reviews", "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 3}},
                "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                            {"name": "v2", "labels": {"version": "v2"},
                             "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}]}},
            "virtualServices": {"shop/reviews": {"hosts": ["reviews"], "http": [
                {"match": [{"uri": {"prefix": "/api"}}], "route": [
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 80},
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 20}]},
                {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}}
        }))
        .unwrap()
    }

    #[test]
    fn rows_follow_the_compiled_snapshot() {
        let snap = Snapshot::compile(view(), "shop").unwrap();
        let table = crate::state::join(&Table::default(), &snap);
        let c = compile(
            &snap,
            &table,
            Ports {
                outbound: 15001,
                inbound: 15006,
                router: false,
            },
        );
        let names: Vec<(&str, &str, &str)> = c
            .clusters
            .iter()
            .map(|r| (r.name.as_str(), r.subset.as_str(), r.lb_policy.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "outbound|5432||db.shop.svc.cluster.local",
                    "",
                    "LEAST_REQUEST"
                ),
                (
                    "outbound|9080||reviews.shop.svc.cluster.local",
                    "",
                    "LEAST_REQUEST"
                ),
                (
                    "outbound|9080|v1|reviews.shop.svc.cluster.local",
                    "v1",
                    "LEAST_REQUEST"
                ),
                (
                    "outbound|9080|v2|reviews.shop.svc.cluster.local",
                    "v2",
                    "ROUND_ROBIN"
                ),
                ("BlackHoleCluster", "", ""),
                ("InboundPassthroughCluster", "", "CLUSTER_PROVIDED"),
                ("PassthroughCluster", "", "CLUSTER_PROVIDED"),
            ]
        );
        assert!(c.clusters[1].outlier_detection);
        assert_eq!(
            c.clusters[1].destination_rule,
            "reviews.shop.svc.cluster.local"
        );
        let v2: Vec<&str> = c
            .endpoints
            .iter()
            .filter(|e| e.cluster.contains("|v2|"))
            .map(|e| e.endpoint.as_str())
            .collect();
        assert_eq!(v2, ["10.1.0.2:9080"]);
        let unready = c
            .endpoints
            .iter()
            .find(|e| e.endpoint == "10.1.0.3:9080")
            .unwrap();
        assert_eq!(unready.status, "UNHEALTHY");
        let routes: Vec<(&str, &str, &str)> = c
            .routes
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.match_.as_str(),
                    r.virtual_service.as_str(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("9080", "/api*", "reviews.shop"),
                ("9080", "/*", "reviews.shop")
            ]
        );
        assert_eq!(
            c.routes[0].destinations,
            [
                "outbound|9080|v2|reviews.shop.svc.cluster.local (80)",
                "outbound|9080|v1|reviews.shop.svc.cluster.local (20)"
            ]
        );
        assert_eq!(c.listeners[0].destination, "BlackHoleCluster");
        assert!(c.listeners.contains(&ListenerRow {
            address: "10.96.0.30".into(),
            port: 5432,
            match_: "ALL".into(),
            destination: "Cluster: outbound|5432||db.shop.svc.cluster.local".into(),
        }));
    }

    #[test]
    fn endpoint_health_is_read_from_the_state_that_outlasts_a_push() {
        const PORTS: Ports = Ports {
            outbound: 15001,
            inbound: 15006,
            router: false,
        };
        let cluster = "outbound|9080||reviews.shop.svc.cluster.local";
        let s1 = Snapshot::compile(view(), "shop").unwrap();
        let t1 = crate::state::join(&Table::default(), &s1);
        let c = s1.all_clusters().find(|c| &*c.name == cluster).unwrap();
        let bound = t1.bind(c);
        let cfg = crate::outlier::OutlierConfig {
            consecutive_5xx: 1,
            consecutive_gateway: 0,
            base_ejection: std::time::Duration::from_secs(60),
            max_ejection_percent: 100,
        };
        crate::outlier::record(&cfg, &bound.members, &bound.members[0], 503);
        let _in_flight = bound.members[0].state.begin();
        let ejected = bound.members[0].ep.addr.to_string();
        // An unrelated push: a new version, another VirtualService.
        let mut v2 = view();
        v2.version += 1;
        v2.virtual_services.remove("shop/reviews");
        let s2 = Snapshot::compile(v2, "shop").unwrap();
        let t2 = crate::state::join(&t1, &s2);
        let rows = compile(&s2, &t2, PORTS).endpoints;
        let row = rows
            .iter()
            .find(|r| r.cluster == cluster && r.endpoint == ejected)
            .unwrap();
        assert_eq!(
            (row.outlier_check.as_str(), row.active_requests),
            ("FAILED", 1)
        );
        let others = rows.iter().filter(|r| r.outlier_check == "FAILED").count();
        assert_eq!(others, 1, "only that endpoint of that cluster: {rows:?}");
    }
}
