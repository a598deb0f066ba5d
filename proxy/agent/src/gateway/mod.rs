//! The gateway part of a router's view: the Gateways whose `selector` matches
//! the pod, their servers grouped into listeners by the port the pod binds
//! (`port.number` is a port of the Service fronting the pod, translated to its
//! `targetPort`), each server's TLS credential and the VirtualServices bound to
//! it. Pure: a snapshot and an identity in, a [`Built`] out.

pub mod bind;
pub mod credential;

use crate::compile::{exported, fqdn, Accepted, Snapshot};
use crate::objects::KubeObject;
use mesh_api::networking::Server;
use mesh_api::syncapi::{GatewayListener, GatewayServer, GatewayView, ProxyIdentity};
use std::collections::{BTreeMap, BTreeSet};

/// A gateway view and what it needs from the registry.
#[derive(Debug, Clone, Default)]
pub struct Built {
    pub view: GatewayView,
    /// FQDNs (or patterns) of the destinations the bound routes name.
    pub destinations: BTreeSet<String>,
    /// An AUTO_PASSTHROUGH server routes by SNI to any service it can see.
    pub all_services: bool,
}

fn selects(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Istio orders configs by creation time, then name, then namespace.
fn order_key(a: &Accepted) -> (Option<String>, String, String) {
    let created = match &*a.object {
        KubeObject::Istio(r) => r
            .meta()
            .creation_timestamp
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(str::to_string)),
        _ => None,
    };
    (created, a.key.name.clone(), a.key.namespace.clone())
}

/// The Gateways that configure this pod, in Istio's order. An empty selector
/// selects every gateway pod, as in Istio.
pub fn selected<'s>(snap: &'s Snapshot, id: &ProxyIdentity) -> Vec<&'s Accepted> {
    let mut out: Vec<&Accepted> = snap
        .gateways
        .iter()
        .filter(|g| !snap.settings.scope_gateway_to_namespace || g.key.namespace == id.namespace)
        .filter(|g| selects(&g.gateway().selector, &id.labels))
        .collect();
    out.sort_by_cached_key(|a| order_key(a));
    out
}

/// The port the pod binds for Service port `number`: the `targetPort` of a
/// Service of the pod's namespace selecting it, else the number itself.
pub fn bound_port(snap: &Snapshot, id: &ProxyIdentity, number: u16) -> u16 {
    snap.selector_services
        .iter()
        .filter(|s| s.namespace == id.namespace && selects(&s.selector, &id.labels))
        .flat_map(|s| s.ports.iter())
        .find(|(p, _)| *p == number)
        .and_then(|(_, t)| *t)
        .unwrap_or(number)
}

/// `port.protocol` as the proxy knows it.
fn protocol(p: Option<&str>) -> String {
    let p = p.unwrap_or("").to_ascii_uppercase();
    match p.as_str() {
        "HTTP" | "HTTPS" | "HTTP2" | "GRPC" | "TLS" | "TCP" => p,
        "GRPC-WEB" => "HTTP".into(),
        _ => "TCP".into(),
    }
}

/// Builds the gateway view of router `id`.
pub fn build(snap: &Snapshot, id: &ProxyIdentity) -> Built {
    let mut built = Built::default();
    let mut vss: Vec<&Accepted> = snap
        .virtual_services
        .iter()
        .filter(|v| exported(&v.export_to, &v.key.namespace, &id.namespace))
        .collect();
    vss.sort_by_cached_key(|a| order_key(a));
    let named: Vec<Vec<String>> = vss
        .iter()
        .map(|v| bind::named_gateways(v.vs(), &v.key.namespace))
        .collect();
    let mut listeners: BTreeMap<u16, GatewayListener> = BTreeMap::new();
    for gw in selected(snap, id) {
        let gw_ns = gw.key.namespace.as_str();
        let gw_name = format!("{gw_ns}/{}", gw.key.name);
        for (index, srv) in gw.gateway().servers.iter().enumerate() {
            let label = format!("{gw_name} servers[{index}]");
            let Some(port) = srv.port.as_ref() else {
                built
                    .view
                    .warnings
                    .push(format!("{label}: no port, server skipped"));
                continue;
            };
            let Ok(number) = u16::try_from(port.number) else {
                built.view.warnings.push(format!(
                    "{label}: port {} out of range, server skipped",
                    port.number
                ));
                continue;
            };
            let mut server = server(snap, id, srv, &gw_name, index, &label);
            if let Some(e) = server.tls.as_ref().and_then(|t| t.error.clone()) {
                built.view.warnings.push(e);
            }
            let mode = server.tls.as_ref().map(|t| t.mode.as_str());
            let kind = bind::route_kind(&server.protocol, mode);
            built.all_services |= mode == Some("AUTO_PASSTHROUGH");
            for (vs, names) in vss.iter().zip(&named) {
                let spec = vs.vs();
                let vs_ns = vs.key.namespace.as_str();
                if names.contains(&gw_name)
                    && bind::has_routes(spec, kind)
                    && bind::hosts_bind(&srv.hosts, gw_ns, vs_ns, &vs.hosts)
                {
                    let key = format!("{vs_ns}/{}", vs.key.name);
                    server.virtual_services.push(key.clone());
                    if !built.view.virtual_services.contains_key(&key) {
                        for d in bind::destinations(spec) {
                            built.destinations.insert(fqdn(
                                &d,
                                vs_ns,
                                &snap.settings.domain_suffix,
                            ));
                        }
                        built
                            .view
                            .virtual_services
                            .insert(key, bind::rewritten(spec, vs_ns));
                    }
                }
            }
            let bound = bound_port(snap, id, number);
            listeners
                .entry(bound)
                .or_insert_with(|| GatewayListener {
                    port: bound,
                    service_port: number,
                    servers: Vec::new(),
                })
                .servers
                .push(server);
        }
    }
    built.view.listeners = listeners.into_values().collect();
    built
}

fn server(
    snap: &Snapshot,
    id: &ProxyIdentity,
    srv: &Server,
    gw_name: &str,
    index: usize,
    label: &str,
) -> GatewayServer {
    let port = srv.port.as_ref();
    let https_redirect = srv
        .tls
        .as_ref()
        .and_then(|t| t.https_redirect)
        .unwrap_or(false);
    let proto = protocol(port.and_then(|p| p.protocol.as_deref()));
    // On a plaintext HTTP server `tls` carries only httpsRedirect.
    let tls = srv
        .tls
        .as_ref()
        .filter(|_| proto != "HTTP")
        .map(|t| credential::server_tls(&snap.secrets, &id.namespace, label, t));
    GatewayServer {
        gateway: gw_name.to_string(),
        index,
        port_name: port.and_then(|p| p.name.clone()).unwrap_or_default(),
        protocol: proto,
        hosts: srv
            .hosts
            .iter()
            .map(|h| bind::split_host(h).1.to_string())
            .collect(),
        https_redirect,
        tls,
        virtual_services: Vec::new(),
        default_endpoint: srv.default_endpoint.clone(),
    }
}

/// What an unauthenticated config-only port sends a router instead of key
/// material: each credential replaced by an error (and a warning), so any
/// pod that can reach that port never obtains a gateway's private key.
pub fn without_credentials(view: &mut GatewayView) {
    let mut lines = Vec::new();
    for s in view.listeners.iter_mut().flat_map(|l| &mut l.servers) {
        if let Some(t) = s.tls.as_mut().filter(|t| t.credential.is_some()) {
            t.credential = None;
            let e = format!(
                "{} servers[{}]: credentials are sent only on the authenticated sync port (15012), not on the plaintext config port",
                s.gateway, s.index
            );
            lines.push(e.clone());
            t.error = Some(e);
        }
    }
    view.warnings.extend(lines);
}
