//! The library a proxy uses to follow the agent: connect with exponential backoff,
//! subscribe (telling the agent which version it already runs, so a reconnect is a
//! resume), check each view with the caller's `apply` and ACK or NACK it. The last
//! good view stays current when the agent is down or a view is rejected; views
//! replace each other whole, so applying is atomic. A push may come as a
//! delta ([`crate::syncdelta`]): the client rebuilds the whole view from the
//! last one received and applies that, so the applier always sees full views.
//!
//! [`Transport`]: plaintext, or TLS 1.3 verified against a root bundle file and
//! an expected server name (the agent's 15012 when its CA is on). The bundle is
//! re-read at every connection, so a root rotation published into the file (the
//! mounted `istio-ca-root-cert`) applies to the next connection.
//!
//! Over TLS the subscription carries the pod's token (`token_file`), re-read at
//! every connection because projected tokens rotate; it is never sent over a
//! plaintext transport. Once the proxy holds a workload certificate
//! (`client_cert`, asked for at every connection because it rotates) it is
//! presented as TLS client certificate instead, and the token stays home. If
//! the agent refuses a subscription made with the certificate (a CA that no
//! longer trusts it, say), the next attempt goes with the token, and the one
//! after that with the certificate again (after a view: the certificate). A refusal from the agent
//! (unauthenticated, not the caller's pod, a pod the agent does not know yet)
//! is logged and retried with the same backoff; the backoff resets only once a
//! view arrives.
//!
//! Hosts found by on-demand lookups age out ([`crate::syncidle`]): the
//! proxy marks their use with [`Client::touch`], and every
//! [`IdlePolicy::interval`] the client drops the idle ones from what it asks
//! for and sends the agent `Forget`.

mod certificate;
mod transport;

pub use certificate::{request_certificate, SignedCert};
pub use transport::{connect, connect_as, ClientCert, CurrentCert, Io, Transport};

use crate::syncapi::{AgentMessage, ClientMessage, ProxyIdentity, ProxyView};
use crate::syncdelta::DeltaError;
use crate::syncframe::{encode, framed, ProtocolError};
use crate::syncidle::{IdlePolicy, InUse, Usage};
use crate::synclookup::{Answer, Ask, Lookups};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How to reach the agent and who we are.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub agent_addr: String,
    pub transport: Transport,
    pub identity: ProxyIdentity,
    /// The pod's credential, sent with every subscription over TLS made
    /// without a certificate.
    pub token_file: Option<std::path::PathBuf>,
    /// The workload certificate, presented over TLS once there is one.
    pub client_cert: Option<CurrentCert>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// When hosts found on demand age out; `None`: never.
    pub idle: Option<IdlePolicy>,
}

impl ClientConfig {
    pub fn new(agent_addr: impl Into<String>, identity: ProxyIdentity) -> Self {
        ClientConfig {
            agent_addr: agent_addr.into(),
            transport: Transport::Plaintext,
            identity,
            token_file: None,
            client_cert: None,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            idle: Some(IdlePolicy::default()),
        }
    }
}

/// What the proxy currently runs, observable by the rest of the proxy.
#[derive(Debug, Clone, Default)]
pub struct ClientState {
    /// Last view that `apply` accepted.
    pub current: Option<Arc<ProxyView>>,
    pub connected: bool,
    /// Which agent sent `current`.
    pub agent: String,
}

/// Checks and installs a view; `Err(reason)` rejects it (NACK) and keeps the old one.
pub trait Apply: Send + 'static {
    fn apply(&mut self, view: &ProxyView) -> Result<(), String>;

    /// The same, with the client's own handle on the view: an applier that
    /// keeps the view (the sidecar's snapshot does, for its config dump)
    /// shares it instead of copying every route and rule.
    fn apply_shared(&mut self, view: &Arc<ProxyView>) -> Result<(), String> {
        self.apply(view)
    }
}

impl<F: FnMut(&ProxyView) -> Result<(), String> + Send + 'static> Apply for F {
    fn apply(&mut self, view: &ProxyView) -> Result<(), String> {
        self(view)
    }
}

/// Starts following the agent in the background; returns the state channel.
/// The task ends when `shutdown` fires.
pub fn spawn(
    cfg: ClientConfig,
    apply: impl Apply,
    shutdown: CancellationToken,
) -> watch::Receiver<ClientState> {
    spawn_client(cfg, apply, shutdown).state
}

/// A lookup question and where its answer goes.
type Question = (String, oneshot::Sender<Answer>);

/// A running client: what it runs, and on-demand lookups.
#[derive(Clone)]
pub struct Client {
    pub state: watch::Receiver<ClientState>,
    lookups: mpsc::UnboundedSender<Question>,
    usage: Arc<Usage>,
}

impl Client {
    /// Asks the agent about a destination the proxy does not know (an IP or
    /// a host). Concurrent questions for one target share one lookup; when
    /// the answer is [`Answer::Found`], the view carrying the service has
    /// been applied already.
    pub async fn lookup(&self, target: impl Into<String>) -> Answer {
        let (tx, rx) = oneshot::channel();
        if self.lookups.send((target.into(), tx)).is_err() {
            return Answer::Unavailable("the sync client stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Answer::Unavailable("the sync client stopped".into()))
    }

    /// A connection or request to `host` (a cluster's host) starts: for a
    /// host found on demand, a guard that keeps it from ageing out until
    /// dropped. Lock-free; `None` for every other host.
    pub fn touch(&self, host: &str) -> Option<InUse> {
        self.usage.touch(host)
    }

    /// The hosts found on demand and not aged out (sorted).
    pub fn on_demand_hosts(&self) -> Vec<String> {
        self.usage.hosts()
    }
}

/// The client's clock: tokio's, so tests can pause it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// [`spawn`], with a handle for on-demand lookups.
pub fn spawn_client(cfg: ClientConfig, apply: impl Apply, shutdown: CancellationToken) -> Client {
    let (tx, rx) = watch::channel(ClientState::default());
    let (lookups, questions) = mpsc::unbounded_channel();
    let usage = Arc::new(Usage::new(now));
    tokio::spawn(run(cfg, apply, tx, questions, usage.clone(), shutdown));
    Client {
        state: rx,
        lookups,
        usage,
    }
}

async fn run(
    cfg: ClientConfig,
    mut apply: impl Apply,
    state: watch::Sender<ClientState>,
    mut questions: mpsc::UnboundedReceiver<Question>,
    usage: Arc<Usage>,
    shutdown: CancellationToken,
) {
    let mut retry = Retry {
        backoff: cfg.initial_backoff,
        with_cert: true,
        presented_cert: false,
    };
    let mut table = Lookups::default();
    loop {
        let mut on_demand = OnDemand {
            table: &mut table,
            questions: &mut questions,
            usage: &usage,
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&cfg, &mut apply, &state, &mut retry, &mut on_demand) => r,
        };
        state.send_modify(|s| s.connected = false);
        for w in table.disconnected() {
            let _ = w.send(Answer::Unavailable("the sync stream ended".into()));
        }
        match result {
            Err(ProtocolError::Refused(e)) => {
                tracing::warn!(error = %e, agent = %cfg.agent_addr, certificate = retry.presented_cert,
                    "the agent refused the subscription; retrying");
                if cfg.token_file.is_some() {
                    // Alternate the credentials: a refused certificate (a CA
                    // that no longer trusts it) is not repeated until it
                    // rotates, nor a refused token while a certificate is there.
                    retry.with_cert = !retry.presented_cert;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, agent = %cfg.agent_addr, "sync stream ended; retrying")
            }
            Ok(()) => {}
        }
        // Jitter spreads a fleet's reconnects after an agent restart.
        let jitter = Duration::from_millis(u64::from(std::process::id() ^ rand_u32()) % 100);
        let pause = tokio::time::sleep(retry.backoff + jitter);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut pause => break,
                // No agent to ask: a connection must not wait for one.
                Some((_, w)) = questions.recv() => {
                    let _ = w.send(Answer::Unavailable("not connected to the agent".into()));
                }
            }
        }
        retry.backoff = (retry.backoff * 2).min(cfg.max_backoff);
    }
}

/// What one connection attempt starts from and leaves for the next.
struct Retry {
    backoff: Duration,
    /// Present the certificate (if there is one) at this attempt.
    with_cert: bool,
    /// The last attempt presented one.
    presented_cert: bool,
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() as u32
}

/// The on-demand state a session works on.
struct OnDemand<'a> {
    table: &'a mut Lookups<oneshot::Sender<Answer>>,
    questions: &'a mut mpsc::UnboundedReceiver<Question>,
    usage: &'a Usage,
}

impl OnDemand<'_> {
    /// Hosts idle past the policy's TTL, taken out of what is asked for.
    fn age_out(&mut self, idle: Option<IdlePolicy>) -> Vec<String> {
        let Some(policy) = idle else {
            return Vec::new();
        };
        let gone = self.usage.sweep(policy.ttl);
        self.table.forget(&gone);
        gone
    }
}

async fn session(
    cfg: &ClientConfig,
    apply: &mut impl Apply,
    state: &watch::Sender<ClientState>,
    retry: &mut Retry,
    od: &mut OnDemand<'_>,
) -> Result<(), ProtocolError> {
    let tls = matches!(cfg.transport, Transport::Tls { .. });
    let cert = match &cfg.client_cert {
        Some(current) if tls && retry.with_cert => (current.0)(),
        _ => None,
    };
    retry.presented_cert = cert.is_some();
    let token = match &cfg.token_file {
        Some(f) if tls && cert.is_none() => Some(read_token(f).await?),
        _ => None,
    };
    let sock = connect_as(&cfg.agent_addr, &cfg.transport, cert.as_ref()).await?;
    let mut io = framed(sock);
    let last_version = state.borrow().current.as_ref().map(|v| v.version);
    // What went idle while disconnected is not asked for again.
    let gone = od.age_out(cfg.idle);
    if !gone.is_empty() {
        tracing::debug!(hosts = ?gone, "on-demand hosts aged out");
    }
    io.send(encode(&ClientMessage::Subscribe {
        identity: cfg.identity.clone(),
        last_version,
        token,
        requested: od.table.found().iter().cloned().collect(),
        deltas: true,
    }))
    .await?;
    state.send_modify(|s| s.connected = true);
    let mut open = true;
    // The last view received on this stream, applied or not: what the next
    // delta applies to.
    let mut received: Option<Arc<ProxyView>> = None;
    let sweep_every = cfg.idle.map_or(Duration::from_secs(3600), |p| p.interval());
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + sweep_every, sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            frame = io.next() => match frame {
                Some(f) => f,
                None => break,
            },
            _ = sweep.tick(), if cfg.idle.is_some() => {
                let targets = od.age_out(cfg.idle);
                if !targets.is_empty() {
                    tracing::debug!(hosts = ?targets, "on-demand hosts aged out; asking the agent to forget them");
                    io.send(encode(&ClientMessage::Forget { targets })).await?;
                }
                continue;
            }
            q = od.questions.recv(), if open => {
                match q {
                    Some((target, w)) => match od.table.ask(&target, w, std::time::Instant::now()) {
                        Ask::Now(answer, w) => { let _ = w.send(answer); }
                        Ask::Send => io.send(encode(&ClientMessage::Lookup { target })).await?,
                        Ask::Joined => {}
                    },
                    None => open = false,
                }
                continue;
            }
        };
        let frame = frame?;
        let msg = crate::syncframe::decode_agent(&frame)?;
        release_large_frame(&mut io, frame);
        match msg {
            AgentMessage::View { agent, view } => {
                let view = Arc::new(view);
                received = Some(view.clone());
                let reply = deliver(apply, state, agent, view);
                retry.backoff = cfg.initial_backoff;
                retry.with_cert = true;
                io.send(encode(&reply)).await?;
            }
            AgentMessage::Delta { agent, delta } => {
                let base = received.as_deref().ok_or(DeltaError::NoBase {
                    version: delta.version,
                });
                let view = base
                    .and_then(|b| crate::syncdelta::apply(b, &delta))
                    .map_err(|e| ProtocolError::Unexpected(e.to_string()))?;
                let view = Arc::new(view);
                received = Some(view.clone());
                let reply = deliver(apply, state, agent, view);
                io.send(encode(&reply)).await?;
            }
            AgentMessage::Error { message } => return Err(ProtocolError::Refused(message)),
            AgentMessage::Lookup {
                target,
                host,
                refused,
            } => {
                let now = std::time::Instant::now();
                let (answer, waiters) = od.table.answered(&target, host, refused, now);
                od.table.expire(now);
                if let Answer::Found(h) = &answer {
                    od.usage.add(h);
                }
                for w in waiters {
                    let _ = w.send(answer.clone());
                }
            }
            AgentMessage::Certificate { .. } => {
                return Err(ProtocolError::Unexpected(
                    "a certificate on the sync stream".into(),
                ))
            }
        }
    }
    Err(ProtocolError::Closed)
}

/// Hands a received view to the applier; the answer to send back.
fn deliver(
    apply: &mut impl Apply,
    state: &watch::Sender<ClientState>,
    agent: String,
    view: Arc<ProxyView>,
) -> ClientMessage {
    let version = view.version;
    match apply.apply_shared(&view) {
        Ok(()) => {
            state.send_modify(|s| {
                s.current = Some(view);
                s.agent = agent;
            });
            ClientMessage::Ack { version }
        }
        Err(reason) => {
            // The applier reports its own refusal (the proxy logs each
            // resource once); this line only traces the NACK.
            tracing::debug!(version, %reason, "rejected view; keeping the last good one");
            ClientMessage::Nack { version, reason }
        }
    }
}

/// Frames above this size do not keep their buffer once decoded.
const KEEP_READ_BUFFER: usize = 64 * 1024;

/// Drops a decoded frame, and with a large one (a whole view: hundreds of KB
/// in a big namespace) the read buffer it was read into, which would
/// otherwise stay allocated for the life of the connection, in every sidecar.
fn release_large_frame<T>(io: &mut crate::syncframe::Stream<T>, frame: bytes::BytesMut) {
    let large = frame.len() > KEEP_READ_BUFFER;
    drop(frame);
    if large && io.read_buffer().is_empty() {
        *io.read_buffer_mut() = bytes::BytesMut::new();
    }
}

/// The pod's token as the file holds it now.
async fn read_token(file: &std::path::Path) -> Result<String, ProtocolError> {
    let text = tokio::fs::read_to_string(file).await.map_err(|e| {
        ProtocolError::Unexpected(format!("reading the token {}: {e}", file.display()))
    })?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests;
