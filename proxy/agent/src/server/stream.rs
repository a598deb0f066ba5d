//! The sync stream server: one task per proxy connection. A proxy subscribes with
//! its identity, gets its full view at once and then every newer version (only the
//! latest: the snapshot channel keeps one value, so a slow proxy skips versions and
//! never delays others). ACK/NACK update the tracker. Anything malformed from a
//! proxy closes that stream with an error message and nothing else. On the TLS
//! port a subscription is authenticated (token, or the client certificate of
//! the TLS connection) and limited to the caller's own pods
//! ([`super::access`]); refusals are logged and counted.

use super::access::{self, Auth, Refusal};
use super::interest::Pending;
use super::push::{send_view, Pushed};
use super::shared::Shared;
use crate::compile::{Snapshot, Visibility};
use crate::ondemand;
use crate::protocol::{codec, decode, decode_client, encode, write_frame, ProtocolError};
use futures::StreamExt;
use mesh_api::syncapi::{AgentMessage, ClientMessage};
use rustls::pki_types::CertificateDer;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use super::viewcache::{Built, ViewCache};

/// What a listener speaks and allows.
#[derive(Clone)]
pub enum Mode {
    /// TLS with the agent's serving certificate; CSRs allowed; subscriptions
    /// authenticated and limited to the caller's own pods.
    Tls(Arc<super::tls::ServerTls>),
    /// Plaintext, trusting its network (any pod's view to anyone who asks);
    /// `csr` says whether certificate requests are served (only on an agent
    /// without CA, which answers them with "no CA" anyway).
    Plain { csr: bool },
}

/// Accepts proxies on `listener` until `shutdown`; open streams end with it.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mode: Mode,
    shutdown: CancellationToken,
) {
    shared
        .interest
        .start(shared.snapshots.clone(), shutdown.clone());
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = sock.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("proxy", %peer);
        let mode = mode.clone();
        tokio::spawn(
            async move {
                let r = match mode {
                    Mode::Plain { csr } => {
                        let port = Port {
                            csr_allowed: csr,
                            authenticate: false,
                        };
                        connection(sock, shared, port, None, shutdown).await
                    }
                    Mode::Tls(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock))
                            .await
                        {
                            Ok(Ok(s)) => {
                                let port = Port {
                                    csr_allowed: true,
                                    authenticate: true,
                                };
                                let peer = s.get_ref().1.peer_certificates().map(<[_]>::to_vec);
                                connection(s, shared, port, peer, shutdown).await
                            }
                            Ok(Err(e)) => {
                                Err(ProtocolError::Unexpected(format!("TLS handshake: {e}")))
                            }
                            Err(_) => Err(ProtocolError::Unexpected(
                                "no TLS handshake within 10s".into(),
                            )),
                        }
                    }
                };
                if let Err(e) = r {
                    tracing::info!(error = %e, "stream closed");
                }
            }
            .instrument(span),
        );
    }
}

/// What one accepted connection may do.
#[derive(Clone, Copy)]
struct Port {
    csr_allowed: bool,
    /// Subscriptions must prove they are for the caller's own pod.
    authenticate: bool,
}

async fn connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    sock: S,
    shared: Arc<Shared>,
    port: Port,
    peer: Option<Vec<CertificateDer<'static>>>,
    shutdown: CancellationToken,
) -> Result<(), ProtocolError> {
    // Reads are framed; writes go straight from the shared encoded view to the
    // socket, so proxies of one scope share one copy of their view.
    let (r, mut w) = tokio::io::split(sock);
    let mut io = FramedRead::new(r, codec());
    let first = tokio::time::timeout(Duration::from_secs(10), io.next())
        .await
        .map_err(|_| ProtocolError::Unexpected("no subscribe within 10s".into()))?
        .ok_or(ProtocolError::Closed)??;
    let (identity, last, token, asked_before, deltas) = match decode::<ClientMessage>(&first) {
        Ok(ClientMessage::Subscribe {
            identity,
            last_version,
            token,
            requested,
            deltas,
        }) => (identity, last_version, token, requested, deltas),
        Ok(ClientMessage::Csr {
            token,
            csr,
            ttl_seconds,
        }) if port.csr_allowed => {
            return certificate(&shared, &mut w, &token, &csr, ttl_seconds).await
        }
        Ok(ClientMessage::Csr { .. }) => {
            return reject(
                &mut w,
                "certificate requests are refused on this plaintext config-only port; \
                 ask the TLS port (15012) so the credential is not sent in clear"
                    .into(),
            )
            .await
        }
        Ok(other) => return reject(&mut w, format!("expected subscribe, got {other:?}")).await,
        Err(e) => return reject(&mut w, e.to_string()).await,
    };
    if identity.namespace.is_empty() || identity.pod.is_empty() {
        return reject(&mut w, "identity needs pod and namespace".into()).await;
    }
    let mut snaps = shared.snapshots.clone();
    let caller = if port.authenticate {
        let (caller, auth) = match authenticate(&shared, peer.as_deref(), token).await {
            Ok(c) => c,
            Err(r) => return refuse(&shared, &mut w, &identity, r).await,
        };
        let owned = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = owner_check(&caller, &identity, &mut snaps) => r,
        };
        match owned {
            Some(Ok(())) => {}
            Some(Err(r)) => return refuse(&shared, &mut w, &identity, r).await,
            None => return Ok(()), // the agent is stopping
        }
        shared.accepted.count(auth);
        Some((caller, auth))
    } else {
        None
    };
    tracing::info!(pod = %identity.pod, namespace = %identity.namespace,
        caller = %caller.as_ref().map(|c| c.0.to_string()).unwrap_or_else(|| "unauthenticated port".into()),
        auth = caller.as_ref().map_or("none", |c| c.1.label()),
        "proxy subscribed");
    let caller = caller.map(|c| c.0);
    let id = shared.tracker.connect(identity.clone(), last);
    let _guard = Disconnect(&shared, id);
    let poke = shared.interest.register(id, &identity.namespace);
    // Key material only where the caller is authenticated, or on an agent
    // that authenticates nobody (no CA: a trusted network).
    let secrets = port.authenticate || port.csr_allowed;
    // Hosts this proxy looked up on demand, kept in its view until it forgets them.
    // A reconnecting proxy names what it had: bounded, and every host still
    // goes through exportTo and Sidecar when its view is built.
    let mut requested: BTreeSet<String> = asked_before
        .into_iter()
        .take(ondemand::MAX_REQUESTED)
        .collect();
    let mut budget = ondemand::Budget::new(std::time::Instant::now());
    let mut pushed = Pushed::new(deltas);
    // Both waits live across iterations. Made anew at each (a push and its
    // ack are two per change), each joined and left the waiter list of its
    // poke and of the shutdown token every stream shares, under their locks.
    let mut cancelled = std::pin::pin!(shutdown.cancelled());
    let mut poked = std::pin::pin!(poke.notified());
    // Lookups and forgets the proxy sent together (already read, as frames
    // in the read buffer) get one view that holds what they changed, then
    // the answers, instead of a view per message. A view stays due and
    // answers wait only while a whole frame is still buffered, so the next
    // turn reads it without I/O and ends with them sent.
    let mut answers: Vec<bytes::Bytes> = Vec::new();
    let mut view_due = false;
    loop {
        tokio::select! {
            _ = cancelled.as_mut() => return Ok(()),
            _ = poked.as_mut() => {
                // Armed again before the push: a poke that comes meanwhile
                // is kept (`notify_one` leaves a permit) for the next turn.
                poked.set(poke.notified());
                // What it was poked for, taken before the snapshot is read:
                // a change poked after this is left for the next wake-up,
                // and every change taken is in the snapshot read.
                let pending = shared.interest.take(id);
                let snap = snaps.borrow_and_update().clone();
                let started = std::time::Instant::now();
                if snap.version == 0 {
                    continue; // nothing compiled yet
                }
                // The pod recreated under another service account: not the
                // caller's any more. (A pod that disappeared is draining: its
                // proxy keeps its view.)
                if let Some(caller) = &caller {
                    match access::check(caller, &snap.pods, &identity) {
                        Ok(()) | Err(Refusal::UnknownPod { .. }) => {}
                        Err(r) => return refuse(&shared, &mut w, &identity, r).await,
                    }
                }
                send_view(&shared, &mut w, &snap, &identity, secrets, &requested, id, &mut pushed,
                    &pending).await?;
                view_due = false;
                shared.xds.pushed(started.elapsed());
            }
            frame = io.next() => {
                let frame = frame.ok_or(ProtocolError::Closed)??;
                match decode_client(&frame) {
                    Ok(ClientMessage::Ack { version }) => shared.tracker.ack(id, version),
                    Ok(ClientMessage::Nack { version, reason }) => {
                        tracing::warn!(version, %reason, "proxy rejected version");
                        shared.tracker.nack(id, version, reason);
                        shared.xds.rejected();
                    }
                    Ok(ClientMessage::Lookup { target }) => {
                        let snap = snaps.borrow().clone();
                        let answer = if !budget.take(std::time::Instant::now()) {
                            shared.xds.lookup_refused();
                            AgentMessage::Lookup {
                                target,
                                host: None,
                                refused: Some(format!(
                                    "too many lookups; next in {:?}",
                                    budget.wait()
                                )),
                            }
                        } else {
                            let host = ondemand::lookup(&snap, &identity, &target);
                            tracing::debug!(%target, ?host, "lookup");
                            let on_demand = snap.settings.visibility == Visibility::OnDemand;
                            if let Some(h) = host.as_ref().filter(|_| on_demand) {
                                let room = requested.len() < ondemand::MAX_REQUESTED;
                                if room && requested.insert(h.clone()) && snap.version > 0 {
                                    view_due = true;
                                }
                            }
                            AgentMessage::Lookup { target, host, refused: None }
                        };
                        answers.push(encode(&answer));
                    }
                    Ok(ClientMessage::Forget { targets }) => {
                        // Aged out on the proxy: out of its view. A host the
                        // view has anyway (namespace scope) stays, as it must.
                        let before = requested.len();
                        for t in &targets {
                            requested.remove(t);
                        }
                        tracing::debug!(hosts = ?targets, "proxy forgot on-demand hosts");
                        let snap = snaps.borrow().clone();
                        let on_demand = snap.settings.visibility == Visibility::OnDemand;
                        if requested.len() < before && on_demand && snap.version > 0 {
                            view_due = true;
                        }
                    }
                    Ok(ClientMessage::Subscribe { .. } | ClientMessage::Csr { .. }) => {
                        return reject(&mut w, "already subscribed".into()).await
                    }
                    Err(e) => return reject(&mut w, e.to_string()).await,
                }
            }
        }
        if (view_due || !answers.is_empty()) && !frame_buffered(io.read_buffer()) {
            if view_due {
                let snap = snaps.borrow().clone();
                send_view(
                    &shared,
                    &mut w,
                    &snap,
                    &identity,
                    secrets,
                    &requested,
                    id,
                    &mut pushed,
                    &Pending::unknown(),
                )
                .await?;
                view_due = false;
            }
            if !answers.is_empty() {
                for a in answers.drain(..) {
                    write_frame(&mut w, &a).await?;
                }
                w.flush().await?;
            }
        }
    }
}

/// Whether `buf` holds a whole frame of the sync stream's codec (a 4-byte
/// big-endian length, then that many bytes): the next read needs no I/O.
fn frame_buffered(buf: &[u8]) -> bool {
    match buf.first_chunk::<4>() {
        Some(len) => buf.len() - 4 >= u32::from_be_bytes(*len) as usize,
        None => false,
    }
}

/// Who the caller is, by the certificate it presented as TLS client and the
/// token in its subscription (see [`access::combine`] for both at once).
async fn authenticate(
    shared: &Shared,
    peer: Option<&[CertificateDer<'static>]>,
    token: Option<String>,
) -> Result<(mesh_api::Identity, Auth), Refusal> {
    let Some(ca) = shared.ca.as_ref() else {
        return Err(crate::ca::auth::AuthError::NotConfigured.into());
    };
    let certificate = match peer.filter(|c| !c.is_empty()) {
        Some(chain) => {
            let current = ca.current();
            let now = rustls::pki_types::UnixTime::now();
            Some(super::peer::identity(
                chain,
                current.roots(),
                &current.trust_domain,
                now,
            )?)
        }
        None => None,
    };
    let token = match token.filter(|t| !t.trim().is_empty()) {
        Some(t) => Some(ca.auth.authenticate(&t).await?),
        None => None,
    };
    access::combine(certificate, token)
}

/// One CSR: authenticate the caller, sign for exactly its identity, answer, close.
async fn certificate<W: AsyncWrite + Unpin>(
    shared: &Shared,
    w: &mut W,
    token: &str,
    csr: &str,
    ttl_seconds: u64,
) -> Result<(), ProtocolError> {
    let Some(ca) = &shared.ca else {
        return reject(
            w,
            "this agent runs no CA (start it with --ca-tokens FILE, or --source kubernetes)".into(),
        )
        .await;
    };
    let identity = match ca.auth.authenticate(token).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "certificate request refused: not authenticated");
            return reject(w, format!("authentication failed: {e}")).await;
        }
    };
    let ttl = Duration::from_secs(ttl_seconds);
    match ca.current().sign(csr, &identity, ttl) {
        Ok(issued) => {
            tracing::info!(%identity, ttl_seconds, "workload certificate issued");
            let msg = encode(&AgentMessage::Certificate {
                cert_chain: issued.chain,
                roots: issued.roots,
            });
            write_frame(w, &msg).await?;
            w.flush().await?;
            Ok(())
        }
        Err(e) => {
            tracing::warn!(%identity, error = %e, "certificate request refused");
            reject(w, format!("certificate request refused: {e}")).await
        }
    }
}

/// How long a subscription for a pod the agent does not know waits for the
/// pod to show up (its watch may lag behind pod creation, or the agent just
/// started and has not listed every kind) before it is refused.
const UNKNOWN_POD_GRACE: Duration = Duration::from_secs(2);

/// Is `id` the caller's pod, as the compiled snapshots know it? Waits for the
/// first compiled snapshot, and up to [`UNKNOWN_POD_GRACE`] for an unknown pod.
/// `None`: the snapshots ended (shutdown).
async fn owner_check(
    caller: &mesh_api::Identity,
    id: &mesh_api::syncapi::ProxyIdentity,
    snaps: &mut tokio::sync::watch::Receiver<Arc<Snapshot>>,
) -> Option<Result<(), Refusal>> {
    let mut snap = snaps.wait_for(|s| s.version > 0).await.ok()?.clone();
    let deadline = tokio::time::Instant::now() + UNKNOWN_POD_GRACE;
    loop {
        match access::check(caller, &snap.pods, id) {
            Err(Refusal::UnknownPod { .. }) if tokio::time::Instant::now() < deadline => {
                match tokio::time::timeout_at(deadline, snaps.changed()).await {
                    Ok(Err(_)) => return None,
                    Ok(Ok(())) => snap = snaps.borrow_and_update().clone(),
                    Err(_) => {} // grace over: the last check decides
                }
            }
            r => return Some(r),
        }
    }
}

/// Refuses a subscription: logged, counted, and the reason sent to the caller.
async fn refuse<W: AsyncWrite + Unpin>(
    shared: &Shared,
    w: &mut W,
    id: &mesh_api::syncapi::ProxyIdentity,
    why: Refusal,
) -> Result<(), ProtocolError> {
    tracing::warn!(pod = %id.pod, namespace = %id.namespace, reason = why.reason(),
        error = %why, "subscription refused");
    shared.refusals.count(&why);
    reject(w, why.to_string()).await
}

struct Disconnect<'a>(&'a Shared, u64);

impl Drop for Disconnect<'_> {
    fn drop(&mut self) {
        self.0.tracker.disconnect(self.1);
        self.0.interest.unregister(self.1);
    }
}

async fn reject<W: AsyncWrite + Unpin>(w: &mut W, message: String) -> Result<(), ProtocolError> {
    let msg = encode(&AgentMessage::Error {
        message: message.clone(),
    });
    let _ = write_frame(w, &msg).await;
    let _ = w.flush().await;
    Err(ProtocolError::Unexpected(message))
}

#[cfg(test)]
mod tests {
    use super::frame_buffered;
    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    #[test]
    fn a_frame_is_buffered_once_its_last_byte_is() {
        let mut buf = BytesMut::new();
        crate::protocol::codec()
            .encode(bytes::Bytes::from_static(b"{\"ack\":1}"), &mut buf)
            .unwrap();
        for cut in 0..buf.len() {
            assert!(!frame_buffered(&buf[..cut]), "{cut} of {} bytes", buf.len());
        }
        assert!(frame_buffered(&buf));
        buf.extend_from_slice(&[0, 0]);
        assert!(frame_buffered(&buf));
    }
}
