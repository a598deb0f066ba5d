//! The capture listeners. Outbound (15001): every connection the app makes,
//! with its original destination; inbound (15006): every connection to the pod.
//! Each connection gets one span, its protocol from the service port (or by
//! detection), and is carried as HTTP or opaque TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::conn::{Drain, DrainWatch};
use crate::http::ConnCtx;
use crate::metrics::{Reporter, Workload};
use crate::mtls::inbound::Hello;
use crate::mtls::stream::{Alpn, TlsDial};
use crate::mtls::InboundMode;
use crate::shared::{ConnGuard, Shared};
use crate::snapshot::{OutboundPolicy, Protocol};
use crate::tcp::{self, Sniffed, TcpMeta};

/// Which listener a connection arrived on: a capture listener (its direction)
/// or one of a gateway's ports ([`crate::gateway`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Capture(Reporter),
    Gateway(u16),
}

impl From<Reporter> for Listener {
    fn from(r: Reporter) -> Listener {
        Listener::Capture(r)
    }
}

/// Accepts until `stop` resolves, then lets HTTP connections finish gracefully
/// (GOAWAY / `Connection: close`) for at most `drain`. At most
/// `--max-connections-per-listener` connections at once: the next is closed at
/// once, counted, and logged (once per interval).
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    kind: impl Into<Listener>,
    stop: impl std::future::Future<Output = ()>,
    drain: std::time::Duration,
) {
    let kind = kind.into();
    let graceful = Drain::default();
    let cap = crate::downstream::ConnCap::new(shared.cfg.max_connections_per_listener);
    // A gateway port faces callers as the inbound listener does.
    let overflow = match kind {
        Listener::Capture(Reporter::Source) => &shared.metrics.conn.overflow_outbound,
        _ => &shared.metrics.conn.overflow_inbound,
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        if !shared.admit(peer.ip()) {
            // Penalized for a flood: refused before any work (RST, no TIME_WAIT).
            refuse(stream);
            continue;
        }
        let Some(permit) = cap.admit() else {
            overflow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if cap.log_refusal() {
                tracing::warn!(
                    listener = ?kind,
                    max = shared.cfg.max_connections_per_listener,
                    %peer,
                    "connection limit reached: refusing connections (logged once per 10s)"
                );
            }
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let local = stream.local_addr().unwrap_or(peer);
        let orig_dst = crate::orig_dst::original_dst(&stream, local).unwrap_or(local);
        let span = tracing::debug_span!("conn", listener = ?kind, %peer, dst = %orig_dst);
        let watcher = graceful.watch();
        tokio::spawn(
            async move {
                let _permit = permit;
                let _guard = ConnGuard::new(&shared);
                let _ = stream.set_nodelay(true);
                match kind {
                    Listener::Capture(direction) => {
                        handle_conn(stream, peer, orig_dst, shared, direction, watcher).await
                    }
                    Listener::Gateway(port) => {
                        crate::gateway::conn::serve(stream, peer, local, port, shared, watcher)
                            .await
                    }
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    graceful.shutdown(drain).await;
}

/// Drops a refused connection with a reset: the attacker learns at once, and
/// no TIME_WAIT socket is left behind per refusal.
fn refuse(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

pub(crate) async fn serve_http<S>(stream: S, ctx: Arc<ConnCtx>, watcher: DrainWatch)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The HTTP/1 head guard sits right under hyper: it sees exactly the bytes
    // hyper would parse (HTTP/2 passes through it untouched).
    crate::conn::serve(crate::h1guard::Guarded::new(stream), ctx, watcher).await
}

async fn handle_conn(
    stream: TcpStream,
    peer: SocketAddr,
    orig_dst: SocketAddr,
    shared: Arc<Shared>,
    direction: Reporter,
    watcher: DrainWatch,
) {
    let snap = shared.store.load();
    let ctx = Arc::new(ConnCtx {
        peer_cert_hash: None,
        shared: shared.clone(),
        peer,
        orig_dst,
        direction,
        peer_identity: None,
        gateway: None,
    });
    match direction {
        Reporter::Source => {
            let cluster = snap
                .as_ref()
                .and_then(|s| s.cluster_for_dst(orig_dst).cloned());
            let protocol = cluster
                .as_ref()
                .map(|c| c.protocol)
                .unwrap_or(Protocol::Unknown);
            let registry_only = snap
                .as_ref()
                .is_some_and(|s| s.outbound_policy == OutboundPolicy::RegistryOnly);
            let sniffed = match protocol {
                Protocol::Http1 | Protocol::Http2 => Sniffed::Http,
                Protocol::Tcp => Sniffed::Tcp(None),
                Protocol::Unknown => {
                    let dial_target = if cluster.is_none() && registry_only {
                        None
                    } else {
                        Some(orig_dst)
                    };
                    let c = cluster.clone();
                    tcp::sniff(&stream, shared.cfg.detect_timeout, || async move {
                        match (
                            c.and_then(|c| c.endpoints.first().map(|e| e.addr)),
                            dial_target,
                        ) {
                            (Some(a), _) | (None, Some(a)) => crate::endpoint::connect(a).await,
                            (None, None) => Err(std::io::ErrorKind::NotFound.into()),
                        }
                    })
                    .await
                }
            };
            match sniffed {
                Sniffed::Http => serve_http(stream, ctx, watcher).await,
                Sniffed::Tcp(pre) => {
                    outbound_tcp(stream, orig_dst, &shared, cluster, registry_only, pre).await
                }
            }
        }
        Reporter::Destination => {
            // Never relay a remote peer to the proxy's own loopback-only ports
            // (admin, capture listeners): that would expose them to the network.
            let own = [
                shared.cfg.admin.port(),
                shared.cfg.outbound.port(),
                shared.cfg.inbound.port(),
                mesh_api::ports::DNS_CAPTURE,
            ];
            if own.contains(&orig_dst.port()) {
                tracing::debug!(
                    port = orig_dst.port(),
                    "inbound connection to a proxy port refused"
                );
                return;
            }
            let declared = snap
                .as_ref()
                .and_then(|s| s.cluster_for_dst(orig_dst).map(|c| c.protocol))
                .unwrap_or(Protocol::Unknown);
            let port = orig_dst.port();
            let mode = snap
                .as_ref()
                .map(|s| InboundMode::for_port(&s.view.inbound, port))
                .unwrap_or(InboundMode::Permissive);
            // Without a certificate PERMISSIVE is plain plaintext: no need to wait
            // for first bytes (server-first protocols keep their latency).
            let may_tls = shared.tls.current().is_some() || mode == InboundMode::Strict;
            if mode != InboundMode::Disable && may_tls {
                match crate::mtls::inbound::classify(&stream, shared.cfg.detect_timeout).await {
                    Hello::Istio => {
                        let Some(creds) = shared.tls.current() else {
                            tracing::info!(
                                port,
                                "mTLS connection refused: no workload certificate yet"
                            );
                            return;
                        };
                        crate::mtls::inbound::serve(stream, ctx, creds, declared, watcher).await;
                        return;
                    }
                    _ if mode == InboundMode::Strict => {
                        tracing::info!(port, %peer, "plaintext connection refused: PeerAuthentication STRICT");
                        shared.metrics.strict_refused();
                        return;
                    }
                    _ => {}
                }
            }
            let ip = shared.cfg.instance_ip;
            // Decided before sniffing so a connection TCP policy refuses never
            // reaches the app, not even through the server-first early dial.
            let verdict = crate::gate::tcp_verdict(
                snap.as_deref(),
                peer,
                orig_dst,
                ctx.peer_identity.as_ref(),
            );
            let may_dial = verdict.is_allowed();
            let sniffed = match declared {
                Protocol::Http1 | Protocol::Http2 => Sniffed::Http,
                Protocol::Tcp => Sniffed::Tcp(None),
                Protocol::Unknown if !may_dial => {
                    // No early dial: wait the whole window for the client to speak.
                    match crate::detect::detect(&stream, shared.cfg.detect_timeout).await {
                        crate::detect::Detected::Http1 | crate::detect::Detected::Http2 => {
                            Sniffed::Http
                        }
                        _ => Sniffed::Tcp(None),
                    }
                }
                Protocol::Unknown => {
                    tcp::sniff(&stream, shared.cfg.detect_timeout, || {
                        crate::endpoint::connect_local_app(port, ip)
                    })
                    .await
                }
            };
            match sniffed {
                Sniffed::Http => serve_http(stream, ctx, watcher).await,
                Sniffed::Tcp(pre) => {
                    let addrs = (stream.local_addr().ok(), stream.peer_addr().ok());
                    inbound_tcp(stream, addrs, orig_dst, &shared, pre, None, verdict).await
                }
            }
        }
    }
}

async fn outbound_tcp(
    stream: TcpStream,
    orig_dst: SocketAddr,
    shared: &Arc<Shared>,
    cluster: Option<Arc<crate::snapshot::Cluster>>,
    registry_only: bool,
    pre: Option<TcpStream>,
) {
    // A VirtualService `tcp`/`tls` route may send the connection elsewhere.
    let cluster = match &cluster {
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
            .and_then(|a| c.endpoints.iter().find(|e| e.addr == a).cloned())
            .unwrap_or(target),
        _ => target,
    };
    // What the source proxy knows of the destination for `istio_tcp_*` (no
    // response carries the peer's own description on a TCP connection).
    let mut meta = meta;
    if let Some(c) = &cluster {
        meta.destination = Workload::of_endpoint(&target.labels, &c.namespace);
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
fn passthrough_endpoint(addr: SocketAddr) -> Arc<crate::snapshot::Endpoint> {
    Arc::new(crate::snapshot::Endpoint {
        addr,
        labels: Default::default(),
        service_account: None,
        tls: crate::mtls::UpstreamTls::Plaintext,
    })
}

/// Carries an inbound connection (plaintext, or already decrypted) to the app.
pub(crate) async fn inbound_tcp<D>(
    stream: D,
    addrs: (Option<SocketAddr>, Option<SocketAddr>),
    orig_dst: SocketAddr,
    shared: &Arc<Shared>,
    pre: Option<TcpStream>,
    peer: Option<&crate::mtls::PeerCert>,
    verdict: crate::authz::Verdict,
) where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let snap = shared.store.load();
    let cluster = snap
        .as_ref()
        .and_then(|s| s.cluster_for_dst(orig_dst).cloned());
    let source = match peer {
        Some(p) => {
            // The caller's pod among the endpoints this proxy knows, by address.
            let ip = addrs.1.map(|a| a.ip());
            let endpoint = snap.as_ref().zip(ip).and_then(|(s, ip)| {
                s.clusters().iter().find_map(|c| {
                    let e = c.endpoints.iter().find(|e| e.addr.ip() == ip)?;
                    Some((&e.labels, &c.namespace, e.service_account.as_deref()))
                })
            });
            Workload::of_peer(
                &p.identity.to_string(),
                &p.identity.namespace,
                &p.identity.service_account,
                endpoint,
            )
        }
        None => Workload::unknown(),
    };
    let meta = TcpMeta {
        reporter: Reporter::Destination,
        source,
        destination: shared.me.clone(),
        service: cluster
            .as_ref()
            .map(|c| c.host.clone())
            .unwrap_or_else(|| Arc::from("unknown")),
        service_name: cluster
            .as_ref()
            .map(|c| c.service_name.clone())
            .unwrap_or_else(|| Arc::from("unknown")),
        service_namespace: shared.me.namespace.clone(),
        cluster: format!("inbound|{}||", orig_dst.port()),
        mtls: peer.is_some(),
    };
    if !verdict.is_allowed() {
        // Envoy's network RBAC filter: the connection is closed, nothing reaches the app.
        tracing::debug!(details = %verdict.details(), "inbound connection denied");
        drop(pre);
        tcp::refuse(shared, stream, meta, "-").await;
        return;
    }
    let up = match pre {
        Some(up) => Ok(up),
        None => crate::endpoint::connect_local_app(orig_dst.port(), shared.cfg.instance_ip).await,
    };
    match up {
        Ok(up) => {
            let upstream = up.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            tcp::splice_io(shared, stream, addrs, up, upstream, meta, "-").await
        }
        Err(_) => tcp::refuse(shared, stream, meta, "UF").await,
    }
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
