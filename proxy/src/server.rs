//! The listeners: the accept loop every listener runs (a capture listener's
//! and each gateway port's: penalty box, connection cap, drain), and the
//! capture listeners' dispatch by direction. Outbound (15001): every connection
//! the app makes, with its original destination; inbound (15006): every
//! connection to the pod. Each connection gets one span, its protocol from the
//! service port (or by detection), and is carried as HTTP or opaque TCP by
//! [`crate::outbound`] or [`crate::inbound`] (after mTLS termination there).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::conn::{ConnCtx, Drain, DrainWatch};
use crate::direction::Direction;
use crate::inbound::tls::Hello;
use crate::mtls::InboundMode;
use crate::shared::{ConnGuard, Shared};
use crate::snapshot::{OutboundPolicy, Protocol};
use crate::tcp::{self, Sniffed};

/// Which listener a connection arrived on: a capture listener (its direction)
/// or one of a gateway's ports (the `gateway` module, above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Capture(Direction),
    Gateway(u16),
}

/// One connection an accept loop admitted, for the listener's handler.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The listener's own address.
    pub local: SocketAddr,
    /// Where the connection was going before the redirect (else `local`).
    pub orig_dst: SocketAddr,
    pub shared: Arc<Shared>,
    pub watcher: DrainWatch,
}

/// Runs a capture listener: every connection is carried `direction`.
pub async fn capture(
    listener: TcpListener,
    shared: Arc<Shared>,
    direction: Direction,
    stop: impl std::future::Future<Output = ()>,
    drain: std::time::Duration,
) {
    let handle = move |a: Accepted| handle_conn(a, direction);
    accept_loop(
        listener,
        shared,
        Listener::Capture(direction),
        stop,
        drain,
        handle,
    )
    .await
}

/// Accepts until `stop` resolves, then lets HTTP connections finish gracefully
/// (GOAWAY / `Connection: close`) for at most `drain`. At most
/// `--max-connections-per-listener` connections at once: the next is closed at
/// once, counted, and logged (once per interval). Each admitted connection
/// is served by `handle` in a task of its own.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    shared: Arc<Shared>,
    kind: Listener,
    stop: impl std::future::Future<Output = ()>,
    drain: std::time::Duration,
    handle: H,
) where
    H: Fn(Accepted) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let graceful = Drain::default();
    let cap = crate::downstream::ConnCap::new(shared.cfg.max_connections_per_listener);
    // A gateway port faces callers as the inbound listener does.
    let overflow = match kind {
        Listener::Capture(Direction::Outbound) => &shared.metrics.conn.overflow_outbound,
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
        let handle = handle.clone();
        tokio::spawn(
            async move {
                let _permit = permit;
                let _guard = ConnGuard::new(&shared);
                let _ = stream.set_nodelay(true);
                handle(Accepted {
                    stream,
                    peer,
                    local,
                    orig_dst,
                    shared,
                    watcher,
                })
                .await
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

/// A capture listener's connection: its protocol from the service port (or by
/// detection), then the direction's HTTP or TCP path.
async fn handle_conn(a: Accepted, direction: Direction) {
    let Accepted {
        stream,
        peer,
        orig_dst,
        shared,
        watcher,
        ..
    } = a;
    let snap = shared.store.load();
    let ctx = Arc::new(ConnCtx {
        xfcc: None,
        shared: shared.clone(),
        peer,
        orig_dst,
        direction,
        peer_identity: None,
    });
    match direction {
        Direction::Outbound => {
            let snap = match snap {
                Some(s) if s.view.on_demand && s.cluster_for_dst(orig_dst).is_none() => {
                    let target = orig_dst.ip().to_string();
                    Some(crate::outbound::ondemand::look_up(&shared, &target, s).await)
                }
                other => other,
            };
            let cluster = snap.as_ref().and_then(|s| {
                s.pinned_endpoint(orig_dst)
                    .or_else(|| s.cluster_for_dst(orig_dst).cloned())
            });
            // An on-demand service does not age out while this connection is open.
            let _in_use = cluster
                .as_ref()
                .and_then(|c| crate::outbound::ondemand::in_use(&shared, &c.host));
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
                Sniffed::Http => crate::outbound::http::serve(stream, ctx, watcher).await,
                Sniffed::Tcp(pre) => {
                    crate::outbound::tcp::carry_captured(
                        stream,
                        orig_dst,
                        &shared,
                        cluster,
                        registry_only,
                        pre,
                    )
                    .await
                }
            }
        }
        Direction::Inbound => {
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
                match crate::inbound::tls::classify(&stream, shared.cfg.detect_timeout).await {
                    Hello::Istio => {
                        let Some(creds) = shared.tls.current() else {
                            tracing::info!(
                                port,
                                "mTLS connection refused: no workload certificate yet"
                            );
                            return;
                        };
                        crate::inbound::tls::serve(stream, ctx, creds, declared, watcher).await;
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
            let verdict = crate::inbound::gate::tcp_verdict(
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
                Sniffed::Http => crate::inbound::http::serve(stream, ctx, watcher).await,
                Sniffed::Tcp(pre) => {
                    let addrs = (stream.local_addr().ok(), stream.peer_addr().ok());
                    crate::inbound::tcp::carry(stream, addrs, orig_dst, &shared, pre, None, verdict)
                        .await
                }
            }
        }
    }
}
