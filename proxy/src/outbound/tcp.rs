//! Outbound TCP: a captured connection to a service carried byte for byte to
//! one of its endpoints (auto mTLS as the endpoint asks), after the host's
//! `tls` (by SNI) and `tcp` routes; without a service it passes through to its
//! original destination (`ALLOW_ANY`) or is refused (`REGISTRY_ONLY`). A
//! gateway's L4 servers carry their connections with the same code.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::metrics::{Reporter, Workload};
use crate::mtls::stream::{Alpn, TlsDial};
use crate::shared::Shared;
use crate::tcp::{self, TcpMeta};

/// Carries a captured outbound connection the sniffing found not to be HTTP.
pub(crate) async fn carry_captured(
    stream: TcpStream,
    orig_dst: SocketAddr,
    shared: &Arc<Shared>,
    cluster: Option<Arc<crate::snapshot::Cluster>>,
    registry_only: bool,
    pre: Option<TcpStream>,
) {
    // A VirtualService `tcp`/`tls` route may send the connection elsewhere;
    // a call to a pod's own address goes to that pod.
    let cluster = match &cluster {
        Some(c) if c.pinned => Some(c.clone()),
        Some(c) => Some(
            l4_route(&stream, c, orig_dst, shared)
                .await
                .unwrap_or_else(|| c.clone()),
        ),
        None => None,
    };
    let addrs = (stream.local_addr().ok(), stream.peer_addr().ok());
    carry_tcp(stream, addrs, orig_dst, shared, cluster, registry_only, pre).await
}

/// Carries a connection, bytes untouched, to an endpoint of `cluster` (auto
/// mTLS as the endpoint asks), or passes it through / refuses it without one.
/// The sidecar's outbound path and a gateway's L4 servers share it; `addrs`
/// are the downstream (local, remote) addresses (the stream may be TLS).
pub(crate) async fn carry_tcp<D>(
    stream: D,
    addrs: (Option<SocketAddr>, Option<SocketAddr>),
    orig_dst: SocketAddr,
    shared: &Arc<Shared>,
    cluster: Option<Arc<crate::snapshot::Cluster>>,
    registry_only: bool,
    pre: Option<TcpStream>,
) where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (target, meta) = match &cluster {
        Some(c) => {
            let keys = crate::lb::RequestKeys {
                headers: None,
                source_ip: addrs.1.map(|a| a.ip()),
            };
            let bound = shared.state.bind(c);
            let ep = crate::lb::pick(&bound.members, &c.lb, &bound.state.rr, &keys)
                .map(|m| m.ep.clone());
            (
                ep,
                TcpMeta {
                    reporter: Reporter::Source,
                    source: shared.me.clone(),
                    destination: Workload::unknown(),
                    service: c.host.clone(),
                    service_name: c.service_name.clone(),
                    service_namespace: c.namespace.clone(),
                    cluster: c.name.clone(),
                    mtls: false,
                },
            )
        }
        None => {
            let host: Arc<str> = Arc::from(orig_dst.ip().to_string().as_str());
            (
                (!registry_only).then(|| passthrough_endpoint(orig_dst)),
                TcpMeta {
                    reporter: Reporter::Source,
                    source: shared.me.clone(),
                    destination: Workload::unknown(),
                    service: host.clone(),
                    service_name: host,
                    service_namespace: Arc::from("unknown"),
                    cluster: if registry_only {
                        "BlackHoleCluster".into()
                    } else {
                        "PassthroughCluster".into()
                    },
                    mtls: false,
                },
            )
        }
    };
    let Some(target) = target else {
        let flags = if cluster.is_some() { "UH" } else { "NR" };
        tcp::refuse(shared, stream, meta, flags).await;
        return;
    };
    // The connection that pre-dialled during detection went to its own endpoint.
    let target = match (&pre, &cluster) {
        (Some(p), Some(c)) => p
            .peer_addr()
            .ok()
            .and_then(|a| {
                let i = c.endpoints.iter().position(|e| e.addr == a)?;
                crate::snapshot::EndpointRef::new(&c.endpoints, i)
            })
            .unwrap_or(target),
        _ => target,
    };
    // What the source proxy knows of the destination for `istio_tcp_*` (no
    // response carries the peer's own description on a TCP connection).
    let mut meta = meta;
    if let Some(c) = &cluster {
        meta.destination = shared.endpoint_workloads.get(&target.labels, &c.namespace);
    }
    let tls = match &cluster {
        Some(c) => TlsDial::for_endpoint(&shared.tls, c, &target, Alpn::Tcp),
        None => Ok(None),
    };
    let up = match pre {
        Some(up) => Ok(up),
        None => crate::endpoint::connect(target.addr).await,
    };
    let (up, tls) = match (up, tls) {
        (Ok(up), Ok(tls)) => (up, tls),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(target = %target.addr, error = %e, "upstream connect failed");
            tcp::refuse(shared, stream, meta, "UF").await;
            return;
        }
    };
    let upstream = target.addr.to_string();
    match tls {
        None => tcp::splice_io(shared, stream, addrs, up, upstream, meta, "-").await,
        Some(dial) => match dial.connect(up).await {
            Ok(up) => tcp::splice_io(shared, stream, addrs, up, upstream, meta, "-").await,
            Err(e) => {
                tracing::debug!(target = %target.addr, error = %e, "mTLS handshake failed");
                tcp::refuse(shared, stream, meta, "UF").await;
            }
        },
    }
}

/// An endpoint for a connection passed through to its original destination.
fn passthrough_endpoint(addr: SocketAddr) -> crate::snapshot::EndpointRef {
    crate::snapshot::EndpointRef::single(crate::snapshot::Endpoint {
        addr,
        labels: Default::default(),
        service_account: None,
        tls: crate::mtls::UpstreamTls::Plaintext,
    })
}

/// Applies the host's `tls` (by SNI) and `tcp` routes, if any: the cluster the
/// connection should go to instead of the service itself.
async fn l4_route(
    stream: &TcpStream,
    cluster: &Arc<crate::snapshot::Cluster>,
    orig_dst: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<Arc<crate::snapshot::Cluster>> {
    let snap = shared.store.load()?;
    let routes = snap.routes.l4.get(cluster.host.as_ref())?.clone();
    let sni = if routes.iter().any(|r| !r.sni.is_empty()) {
        peek_sni(stream).await
    } else {
        None
    };
    let facts = crate::route::L4Facts {
        dst: orig_dst,
        sni: sni.as_deref(),
        source_labels: &shared.cfg.labels,
        source_namespace: &shared.cfg.namespace,
    };
    let route = routes.iter().find(|r| r.matches(&facts))?;
    let t = crate::route::pick_target(&route.targets, fastrand::f64() * 100.0)?;
    snap.destination(&t.host, t.port, t.subset.as_deref(), cluster.port)
}

/// Waits (briefly) for a complete ClientHello and reads its SNI.
pub(crate) async fn peek_sni(stream: &TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 || buf[0] != 0x16 {
            return None;
        }
        if let Some(name) = crate::sni::parse(&buf[..n]) {
            return Some(name);
        }
        let need = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        if n >= need || n == buf.len() {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
