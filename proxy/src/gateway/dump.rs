//! A gateway's part of `/config_dump` (what `meshctl proxy-config
//! listener|route|secret` show): one listener row per server, one route row
//! per route match, and per server certificate its source, serial, validity,
//! SANs and the servers using it. Key bytes are never read here.

use std::collections::BTreeMap;

use super::{GatewayTable, ServerTls};
use crate::config_dump::rows::{
    route_matches, vs_name, Compiled, ListenerRow, RouteRow, SecretRow,
};

fn describe(tls: &ServerTls) -> String {
    match tls {
        ServerTls::Plain => "plaintext".into(),
        ServerTls::Terminate(t) => format!("TLS terminated ({})", t.cert.source),
        ServerTls::IstioMutual => "ISTIO_MUTUAL (workload certificate)".into(),
        ServerTls::Passthrough => "TLS passthrough (sniHosts)".into(),
        ServerTls::AutoPassthrough => "AUTO_PASSTHROUGH (SNI names the cluster)".into(),
        ServerTls::Broken(e) => format!("DISABLED: {e}"),
    }
}

/// Adds the gateway's rows to `out`.
pub fn rows(g: &GatewayTable, out: &mut Compiled) {
    let mut secrets: BTreeMap<(String, String), SecretRow> = BTreeMap::new();
    for (port, table) in &g.ports {
        for s in &table.servers {
            let match_ = if s.is_tls() {
                format!("SNI: {}", s.hosts.join(","))
            } else if s.is_http() {
                format!("Host: {}", s.hosts.join(","))
            } else {
                "ALL".into()
            };
            let destination = if s.https_redirect {
                "301 https redirect".to_string()
            } else if s.is_http() {
                format!("Route: {}", s.name)
            } else {
                format!("{} routes of {} VirtualServices", s.protocol, s.l4.len())
            };
            out.listeners.push(ListenerRow {
                address: "0.0.0.0".into(),
                port: *port,
                match_,
                destination: format!("{destination}; {}", describe(&s.tls)),
            });
            if let ServerTls::Terminate(t) = &s.tls {
                let c = &t.cert;
                secrets
                    .entry((c.source.clone(), c.serial.clone()))
                    .or_insert_with(|| SecretRow {
                        source: c.source.clone(),
                        serial: c.serial.clone(),
                        not_before: c.not_before.clone(),
                        not_after: c.not_after.clone(),
                        sans: c.sans.clone(),
                        has_ca: c.has_ca,
                        servers: Vec::new(),
                    })
                    .servers
                    .push(s.name.clone());
            }
            if !s.is_http() {
                continue;
            }
            for b in &s.http {
                for r in b.routes.iter() {
                    let destinations: Vec<String> = r
                        .targets
                        .iter()
                        .map(|t| {
                            let port = t.port.map(|p| p.to_string()).unwrap_or_default();
                            let subset = t.subset.as_deref().unwrap_or("");
                            format!("outbound|{port}|{subset}|{} ({})", t.host, t.weight)
                        })
                        .collect();
                    for m in route_matches(r) {
                        out.routes.push(RouteRow {
                            name: s.name.clone(),
                            vhost: format!("{}:{}", b.hosts.join(","), table.service_port),
                            domains: b.hosts.clone(),
                            match_: m,
                            virtual_service: vs_name(&b.vs),
                            destinations: destinations.clone(),
                        });
                    }
                }
            }
        }
    }
    out.secrets = secrets.into_values().collect();
}
