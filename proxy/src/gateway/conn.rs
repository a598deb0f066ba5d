//! One connection to a gateway port. A port with TLS servers reads the
//! ClientHello's SNI (peeked, never consumed) and picks the server by it;
//! a server whose hosts do not cover the SNI is never used, so an unknown
//! name gets no certificate at all. The chosen server then terminates TLS
//! (its own certificate, or the workload's for ISTIO_MUTUAL) and serves HTTP,
//! or passes the bytes through untouched to the cluster its `tls` route (or
//! the AUTO_PASSTHROUGH SNI) names. Plaintext ports serve HTTP (the server is
//! chosen per request by `:authority`) or carry TCP by the `tcp` routes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{GatewayConn, PortTable, Server, ServerTls};
use crate::conn::{ConnCtx, DrainWatch};
use crate::direction::Direction;
use crate::metrics::{Reporter, Workload};
use crate::shared::Shared;
use crate::snapshot::{Cluster, Snapshot};

/// Serves one accepted connection on gateway port `port`.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    port: u16,
    shared: Arc<Shared>,
    watcher: DrainWatch,
) {
    let Some(snap) = shared.store.load() else {
        return;
    };
    let Some(table) = snap
        .gateway
        .as_ref()
        .and_then(|g| g.ports.get(&port).cloned())
    else {
        return;
    };
    let has_tls = table.servers.iter().any(|s| s.is_tls());
    let has_plain = table.servers.iter().any(|s| !s.is_tls());
    // Wait for the first bytes (a slow client's ClientHello too) before
    // reading the SNI.
    let tls = has_tls
        && crate::detect::detect(&stream, shared.cfg.first_byte_timeout).await
            == crate::detect::Detected::Tls;
    if !tls && !has_plain {
        tracing::debug!(port, %peer, "not TLS on a TLS-only gateway port: connection closed");
        return;
    }
    let ctx = |identity| {
        Arc::new(ConnCtx {
            xfcc: None,
            shared: shared.clone(),
            peer,
            orig_dst: local,
            direction: Direction::Outbound,
            peer_identity: identity,
        })
    };
    let gw = |server: Option<Arc<Server>>| GatewayConn { port, server };
    if !tls {
        let tcp = table.servers.iter().find(|s| !s.is_tls() && !s.is_http());
        match tcp {
            // A TCP server owns its port (Istio allows one per port).
            Some(s) if !table.servers.iter().any(|s| !s.is_tls() && s.is_http()) => {
                let cluster = l4_cluster(&snap, s, &table, None, &shared);
                let addrs = (Some(local), Some(peer));
                crate::outbound::tcp::carry_tcp(stream, addrs, local, &shared, cluster, true, None)
                    .await
            }
            _ => super::http::serve(stream, ctx(None), watcher, gw(None)).await,
        }
        return;
    }
    let sni = crate::outbound::tcp::peek_sni(&stream)
        .await
        .map(|s| s.to_ascii_lowercase());
    let host = sni.as_deref().unwrap_or("");
    let Some(server) = super::pick(
        table.servers.iter().filter(|s| s.is_tls()),
        |s| &s.hosts,
        host,
    )
    .cloned() else {
        tracing::debug!(port, sni = host, %peer, "no gateway server for this SNI: connection refused");
        shared.metrics.gateway.no_server.fetch_add(1, Relaxed);
        return;
    };
    match &server.tls {
        ServerTls::Plain => {}
        ServerTls::Broken(e) => {
            // Logged once when the view was applied.
            tracing::debug!(server = %server.name, error = %e, "gateway server disabled: connection refused");
            shared.metrics.gateway.no_server.fetch_add(1, Relaxed);
        }
        ServerTls::Terminate(t) => {
            let Some(tls) = handshake(stream, t.config.clone(), &shared, peer).await else {
                return;
            };
            let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            if let Some(der) = cert {
                if !t.client_sans.is_empty()
                    && !crate::mtls::verify::san_matches(der, &t.client_sans)
                {
                    tracing::info!(server = %server.name, %peer,
                        "client certificate has none of the server's subjectAltNames: connection refused");
                    shared
                        .metrics
                        .gateway
                        .handshake_failures
                        .fetch_add(1, Relaxed);
                    return;
                }
            }
            if !server.is_http() {
                // A TLS server terminating: its `tcp` routes carry the bytes.
                let cluster = l4_cluster(&snap, &server, &table, sni.as_deref(), &shared);
                let addrs = (Some(local), Some(peer));
                crate::outbound::tcp::carry_tcp(tls, addrs, local, &shared, cluster, true, None)
                    .await;
                return;
            }
            super::http::serve(tls, ctx(None), watcher, gw(Some(server.clone()))).await
        }
        ServerTls::IstioMutual => {
            let Some(creds) = shared.tls.current() else {
                tracing::info!(server = %server.name, "ISTIO_MUTUAL server: no workload certificate yet");
                shared.metrics.gateway.no_server.fetch_add(1, Relaxed);
                return;
            };
            let Some(tls) = handshake(stream, creds.server.clone(), &shared, peer).await else {
                return;
            };
            let id = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|d| crate::mtls::mesh_identity(d, &shared.cfg.trust_domain).ok());
            super::http::serve(tls, ctx(id), watcher, gw(Some(server.clone()))).await
        }
        ServerTls::Passthrough => {
            let cluster = l4_cluster(&snap, &server, &table, sni.as_deref(), &shared);
            let addrs = (Some(local), Some(peer));
            crate::outbound::tcp::carry_tcp(stream, addrs, local, &shared, cluster, true, None)
                .await
        }
        ServerTls::AutoPassthrough => auto_passthrough(stream, &snap, host, &shared).await,
    }
}

async fn handshake(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    shared: &Shared,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(t)) => Some(t),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "gateway TLS handshake failed");
            shared
                .metrics
                .gateway
                .handshake_failures
                .fetch_add(1, Relaxed);
            None
        }
        Err(_) => {
            tracing::info!(%peer, "gateway TLS handshake timed out");
            shared
                .metrics
                .gateway
                .handshake_failures
                .fetch_add(1, Relaxed);
            None
        }
    }
}

/// The cluster a TCP / PASSTHROUGH connection goes to: the first `tls` (by
/// SNI) or `tcp` route of the VirtualServices bound to `server` whose hosts
/// cover the SNI (any, for TCP) and whose match admits the connection.
fn l4_cluster(
    snap: &Snapshot,
    server: &Server,
    table: &PortTable,
    sni: Option<&str>,
    shared: &Shared,
) -> Option<Arc<Cluster>> {
    let facts = crate::route::L4Facts {
        // `port` in a gateway route match is the Gateway's service port.
        dst: SocketAddr::new([0, 0, 0, 0].into(), table.service_port),
        sni,
        source_labels: &shared.cfg.labels,
        source_namespace: &shared.cfg.namespace,
    };
    let route = server
        .l4
        .iter()
        .filter(|b| sni.is_none_or(|h| super::best_rank(&b.hosts, h).is_some()))
        .flat_map(|b| b.routes.iter())
        .find(|r| r.matches(&facts))?;
    let t = crate::route::pick_target(&route.targets, fastrand::f64() * 100.0)?;
    snap.destination(&t.host, t.port, t.subset.as_deref(), table.service_port)
}

/// `outbound_.9080_.v1_.reviews.default.svc.cluster.local` → (port, subset, host).
pub fn parse_auto_sni(sni: &str) -> Option<(u16, Option<&str>, &str)> {
    let mut it = sni.splitn(4, '_');
    if it.next()? != "outbound" {
        return None;
    }
    let port = it.next()?.strip_prefix('.')?.parse().ok()?;
    let subset = it.next()?.strip_prefix('.')?;
    let host = it.next()?.strip_prefix('.')?;
    (!host.is_empty()).then_some((port, (!subset.is_empty()).then_some(subset), host))
}

/// AUTO_PASSTHROUGH: the SNI names the cluster; the caller's own (mTLS)
/// bytes go to an endpoint unchanged, no TLS of ours around them.
async fn auto_passthrough(stream: TcpStream, snap: &Snapshot, sni: &str, shared: &Arc<Shared>) {
    let cluster = parse_auto_sni(sni)
        .and_then(|(port, subset, host)| snap.destination(host, Some(port), subset, port));
    let meta = |c: Option<&Cluster>| crate::tcp::TcpMeta {
        reporter: Reporter::Source,
        source: shared.me.clone(),
        destination: Workload::unknown(),
        service: Arc::from(c.map(|c| c.host.as_ref()).unwrap_or(sni)),
        service_name: Arc::from(c.map(|c| c.service_name.as_ref()).unwrap_or(sni)),
        service_namespace: Arc::from(c.map(|c| c.namespace.as_ref()).unwrap_or("unknown")),
        cluster: c
            .map(|c| c.name.clone())
            .unwrap_or_else(|| "BlackHoleCluster".into()),
        mtls: false,
    };
    let Some(cluster) = cluster else {
        crate::tcp::refuse(shared, stream, meta(None), "NR").await;
        return;
    };
    let keys = crate::lb::RequestKeys {
        headers: None,
        source_ip: stream.peer_addr().ok().map(|a| a.ip()),
    };
    let bound = shared.state.bind(&cluster);
    let Some(ep) =
        crate::lb::pick(&bound.members, &cluster.lb, &bound.state.rr, &keys).map(|m| m.ep.clone())
    else {
        crate::tcp::refuse(shared, stream, meta(Some(&cluster)), "UH").await;
        return;
    };
    match crate::endpoint::connect(ep.addr).await {
        Ok(up) => crate::tcp::splice(shared, stream, up, meta(Some(&cluster)), "-").await,
        Err(_) => crate::tcp::refuse(shared, stream, meta(Some(&cluster)), "UF").await,
    }
}
