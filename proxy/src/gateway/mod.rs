//! Gateway mode (`mesh-proxy router`, Istio's `proxy router`): no capture;
//! the listeners, servers and routes come from [`mesh_api::gatewayview`].
//!
//! A view's gateway part is compiled with the snapshot into a
//! [`GatewayTable`]: per bound port its servers, each with its TLS built once
//! ([`tls`]) and the routes of the VirtualServices bound to it (compiled by
//! the sidecar's [`crate::route`] code). Per connection ([`conn`]) the server
//! is picked by SNI (TLS) or, per request ([`http`]), by `:authority`: exact
//! host, then the longest `*.suffix`, then `*`. Requests then go through the
//! sidecar's outbound route code (`outbound::route::apply_route`), so
//! resilience, metrics (`reporter=source`, the gateway as source workload),
//! access logs and upstream auto-mTLS are the same path. [`listeners`] binds
//! and unbinds the ports as views change.

pub mod conn;
pub mod dump;
pub mod http;
pub mod listeners;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use mesh_api::gatewayview::{GatewayServer, GatewayView};

use crate::route::{L4Route, Route, RouteError, RouteTable};

/// What the listener task ([`listeners`]) has done, for readiness and the
/// config dump; `Shared` holds it, so it lives here, below both.
#[derive(Debug, Default)]
pub struct ListenerState {
    /// Snapshot version whose listeners are in place, plus one (0: none yet).
    applied: AtomicU64,
    /// Bound port → address; ports that failed → the error.
    ports: Mutex<BTreeMap<u16, Result<SocketAddr, String>>>,
}

impl ListenerState {
    /// Whether the listeners of snapshot `version` are in place.
    pub fn is_applied(&self, version: u64) -> bool {
        self.applied.load(Ordering::Acquire) == version + 1
    }
    /// Every port of the current view: its bound address or why not.
    pub fn ports(&self) -> BTreeMap<u16, Result<SocketAddr, String>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The listeners of snapshot `version` are in place.
    pub(crate) fn set_applied(&self, version: u64) {
        self.applied.store(version + 1, Ordering::Release);
    }
    /// Every port of the current view, after a reconcile.
    pub(crate) fn set_ports(&self, ports: BTreeMap<u16, Result<SocketAddr, String>>) {
        *self.ports.lock().unwrap_or_else(|e| e.into_inner()) = ports;
    }
}

/// ALPN a terminating HTTPS server offers.
const HTTPS_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What a gateway connection knows before its requests: the port it came in
/// on and, when TLS chose one, the server.
#[derive(Clone)]
pub struct GatewayConn {
    pub port: u16,
    pub server: Option<Arc<Server>>,
}

/// How a server treats the bytes of a connection.
#[derive(Debug)]
pub enum ServerTls {
    /// HTTP, HTTP2, GRPC, TCP: no TLS.
    Plain,
    /// SIMPLE, MUTUAL, OPTIONAL_MUTUAL: terminated with the server's certificate.
    Terminate(tls::Terminated),
    /// Terminated with the gateway's own workload certificate (mesh mTLS).
    IstioMutual,
    /// Routed by SNI (`tls` routes), bytes untouched.
    Passthrough,
    /// SNI `outbound_.PORT_.SUBSET_.HOST` names the cluster, bytes untouched.
    AutoPassthrough,
    /// The server's TLS cannot be served (the agent's or ours): it serves nothing.
    Broken(String),
}

/// A VirtualService bound to a server: its hosts and compiled routes.
#[derive(Debug)]
pub struct Bound<R> {
    /// `namespace/name`.
    pub vs: String,
    pub hosts: Vec<String>,
    pub routes: Arc<Vec<R>>,
}

/// One Gateway server, compiled.
#[derive(Debug)]
pub struct Server {
    /// `namespace/name` of the Gateway (what per-match `gateways` name).
    pub gateway: String,
    pub index: usize,
    /// Istio's route-config style name: `https.443.https-a.my-gateway.istio-system`.
    pub name: String,
    /// Upper case, as in the view.
    pub protocol: String,
    pub hosts: Vec<String>,
    pub https_redirect: bool,
    pub tls: ServerTls,
    /// `http` routes of the bound VirtualServices, in precedence order.
    pub http: Vec<Bound<Route>>,
    /// `tls` and `tcp` routes of the bound VirtualServices.
    pub l4: Vec<Bound<L4Route>>,
}

impl Server {
    /// Whether connections to this server start with a TLS ClientHello.
    pub fn is_tls(&self) -> bool {
        !matches!(self.tls, ServerTls::Plain)
    }
    /// Whether requests (rather than opaque bytes) are routed.
    pub fn is_http(&self) -> bool {
        matches!(self.protocol.as_str(), "HTTP" | "HTTPS" | "HTTP2" | "GRPC")
    }
}

/// The servers sharing one bound port.
#[derive(Debug)]
pub struct PortTable {
    pub port: u16,
    pub service_port: u16,
    pub servers: Vec<Arc<Server>>,
}

/// A view's gateway part, compiled.
#[derive(Debug, Default)]
pub struct GatewayTable {
    pub ports: BTreeMap<u16, Arc<PortTable>>,
    /// VirtualServices that cannot be compiled (the view is refused, as a
    /// sidecar's would be).
    pub errors: Vec<(String, RouteError)>,
    /// Servers disabled or settings applied differently, one line each.
    pub warnings: Vec<String>,
}

/// How well `pattern` (a server or VirtualService host) covers `host`: an
/// exact name beats the longest `*.suffix`, which beats `*`. `None`: no match.
pub fn host_rank(pattern: &str, host: &str) -> Option<usize> {
    if pattern == "*" {
        return Some(0);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        let ok = host.len() > suffix.len()
            && host
                .get(host.len() - suffix.len()..)
                .is_some_and(|t| t.eq_ignore_ascii_case(suffix));
        return ok.then_some(suffix.len());
    }
    pattern.eq_ignore_ascii_case(host).then_some(usize::MAX)
}

/// The best rank of any of `patterns` for `host`.
pub fn best_rank(patterns: &[String], host: &str) -> Option<usize> {
    patterns.iter().filter_map(|p| host_rank(p, host)).max()
}

/// The item whose hosts cover `host` most specifically (the first on a tie).
pub fn pick<'a, T>(
    items: impl Iterator<Item = &'a T>,
    hosts: impl Fn(&T) -> &[String],
    host: &str,
) -> Option<&'a T> {
    let mut best: Option<(usize, &T)> = None;
    for it in items {
        if let Some(r) = best_rank(hosts(it), host) {
            if best.is_none_or(|(b, _)| r > b) {
                best = Some((r, it));
            }
        }
    }
    best.map(|(_, it)| it)
}

fn server_name(s: &GatewayServer, service_port: u16) -> String {
    let gw = s.gateway.split_once('/').map(|(ns, n)| format!("{n}.{ns}"));
    format!(
        "{}.{service_port}.{}.{}",
        s.protocol.to_ascii_lowercase(),
        s.port_name,
        gw.unwrap_or_else(|| s.gateway.clone())
    )
}

fn server_tls(s: &GatewayServer, name: &str, warnings: &mut Vec<String>) -> ServerTls {
    let Some(t) = &s.tls else {
        return match s.protocol.as_str() {
            "HTTPS" | "TLS" => ServerTls::Broken(format!("protocol {} without tls", s.protocol)),
            _ => ServerTls::Plain,
        };
    };
    if let Some(e) = &t.error {
        return ServerTls::Broken(e.clone());
    }
    let alpn: &[&[u8]] = if s.protocol == "HTTPS" {
        &HTTPS_ALPN
    } else {
        &[]
    };
    match t.mode.to_ascii_uppercase().as_str() {
        "PASSTHROUGH" => ServerTls::Passthrough,
        "AUTO_PASSTHROUGH" => ServerTls::AutoPassthrough,
        "ISTIO_MUTUAL" => ServerTls::IstioMutual,
        "" | "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" => {
            let mut w = Vec::new();
            let built = tls::terminate(t, alpn, &mut w);
            warnings.extend(w.into_iter().map(|w| format!("gateway server {name}: {w}")));
            match built {
                Ok(t) => ServerTls::Terminate(t),
                Err(e) => ServerTls::Broken(e.to_string()),
            }
        }
        other => ServerTls::Broken(format!("tls.mode {other:?} is not a Gateway TLS mode")),
    }
}

/// One VirtualService's `http` and `tls`/`tcp` routes.
type CompiledVs = (Arc<Vec<Route>>, Arc<Vec<L4Route>>);

impl GatewayTable {
    /// Compiles the gateway part of a view (`domain`: the cluster domain short
    /// destination hosts expand with).
    pub fn compile(view: &GatewayView, domain: &str) -> GatewayTable {
        let mut t = GatewayTable {
            warnings: view.warnings.clone(),
            ..Default::default()
        };
        let mut compiled: BTreeMap<&str, CompiledVs> = BTreeMap::new();
        for (key, vs) in &view.virtual_services {
            match RouteTable::compile_vs(key, vs, domain) {
                Ok((http, l4)) => {
                    compiled.insert(key, (http, Arc::new(l4)));
                }
                Err(e) => t.errors.push((key.clone(), e)),
            }
        }
        for l in &view.listeners {
            let mut servers = Vec::new();
            for s in &l.servers {
                let name = server_name(s, l.service_port);
                let tls = server_tls(s, &name, &mut t.warnings);
                if let ServerTls::Broken(e) = &tls {
                    t.warnings.push(format!(
                        "gateway server {name} (port {}) serves nothing: {e}",
                        l.port
                    ));
                }
                let mut http = Vec::new();
                let mut l4 = Vec::new();
                for key in &s.virtual_services {
                    let (Some((h, l4r)), Some(vs)) =
                        (compiled.get(key.as_str()), view.virtual_services.get(key))
                    else {
                        continue;
                    };
                    let ns = key.split('/').next().unwrap_or("default");
                    let hosts: Vec<String> = vs
                        .hosts
                        .iter()
                        .map(|h| crate::route::fqdn(h, ns, domain))
                        .collect();
                    http.push(Bound {
                        vs: key.clone(),
                        hosts: hosts.clone(),
                        routes: h.clone(),
                    });
                    l4.push(Bound {
                        vs: key.clone(),
                        hosts,
                        routes: l4r.clone(),
                    });
                }
                servers.push(Arc::new(Server {
                    gateway: s.gateway.clone(),
                    index: s.index,
                    name,
                    protocol: s.protocol.to_ascii_uppercase(),
                    hosts: s.hosts.clone(),
                    https_redirect: s.https_redirect,
                    tls,
                    http,
                    l4,
                }));
            }
            t.ports.insert(
                l.port,
                Arc::new(PortTable {
                    port: l.port,
                    service_port: l.service_port,
                    servers,
                }),
            );
        }
        t
    }
}

/// Gateway counters on the Prometheus endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    /// A listener port that could not be bound.
    pub bind_failures: AtomicU64,
    /// TLS handshakes that failed (bad or missing client certificate, no
    /// common version or suite, client gave up).
    pub handshake_failures: AtomicU64,
    /// Connections refused before any handshake: no server for the SNI, or
    /// the server's TLS is broken.
    pub no_server: AtomicU64,
}

impl Counters {
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (name, v) in [
            (
                "mesh_gateway_listener_bind_failures_total",
                &self.bind_failures,
            ),
            (
                "mesh_gateway_tls_handshake_failures_total",
                &self.handshake_failures,
            ),
            ("mesh_gateway_no_server_total", &self.no_server),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
    }
}

#[cfg(test)]
mod tests;
