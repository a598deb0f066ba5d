//! The load generator (our own, wrk2-style; see the README for why not `oha`).
//!
//! Open loop: `conns` connections share a fixed total rate; connection `i` has
//! its own schedule `start + (i/conns + k) * conns/rate`. A request that falls
//! due while its connection still waits for the previous answer is timed from
//! its *intended* send time, so a stall shows up in the latency of every
//! request that should have gone out during it (coordinated-omission
//! correction) instead of silently lowering the rate; a request on an idle
//! connection is timed from when it was sent. Closed loop (`rate` = None) sends the
//! next request as soon as the previous answer arrived, for saturation.
//!
//! `Https1` is `Http1` over TLS (rustls, the bench root as the only trust
//! anchor, SNI from the spec): the handshake happens once per kept-alive
//! connection, during the warm-up, like a browser's or a load balancer's.
//!
//! Every loop is bounded: nothing is scheduled after `warmup + duration`, each
//! request has a timeout, and a hard deadline stops stragglers.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What one connection does per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// HTTP/1.1 GET on a kept-alive connection.
    Http1,
    /// HTTP/2 prior knowledge (h2c), one stream at a time per connection.
    H2c,
    /// Write `size` bytes on a kept-open TCP connection, read them back.
    Tcp,
    /// HTTP/1.1 GET over TLS on a kept-alive connection (needs [`LoadSpec::tls`]).
    Https1,
    /// HTTP/1.1 GET on a new connection per request (`connection: close`).
    Churn,
    /// `Tcp` on a new connection per exchange: with mTLS on, every exchange is
    /// a new TLS handshake between the sidecars (HTTP churn is not: the
    /// sidecars keep their upstream connections).
    TcpChurn,
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    /// `Host` / `:authority` sent (HTTP modes).
    pub authority: String,
    pub mode: Mode,
    pub conns: usize,
    /// Total requests per second; `None` is a closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Expected response body (HTTP) or message size (TCP), bytes.
    pub size: usize,
    pub timeout: Duration,
    /// TLS client settings of `Https1`.
    pub tls: Option<TlsClient>,
}

/// What the load generator's TLS client trusts and asks for.
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    #[error("--ca-file: no PEM certificate in it: {0}")]
    Roots(String),
    #[error("--sni {0:?}: not a DNS name or IP address")]
    ServerName(String),
    #[error("TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsClient {
    /// A TLS 1.2/1.3 client trusting only the certificates in `ca_pem`, sending
    /// `sni` and offering ALPN `http/1.1`.
    pub fn new(ca_pem: &[u8], sni: &str) -> Result<TlsClient, TlsClientError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| TlsClientError::Roots(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| TlsClientError::Roots(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsClientError::Roots("empty".into()));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = rustls_pki_types::ServerName::try_from(sni.to_string())
            .map_err(|_| TlsClientError::ServerName(sni.to_string()))?;
        Ok(TlsClient {
            config: std::sync::Arc::new(config),
            server_name,
        })
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// From latencies in nanoseconds (sorted in place).
    pub fn from_nanos(samples: &mut [u64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let idx = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[idx] as f64 / 1000.0
        };
        let sum: u128 = samples.iter().map(|&s| s as u128).sum();
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
            mean: sum as f64 / samples.len() as f64 / 1000.0,
        }
    }
}

/// What one load run measured (the measurement window only, warm-up excluded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
    /// Completed requests per second in the window.
    pub rps: f64,
    pub latency_us: Percentiles,
    pub first_error: Option<String>,
}

#[derive(Default)]
struct Stats {
    lat: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the load on a single-threaded runtime. Prints `load phase=measure` when
/// the measurement window opens and `load phase=done` when it closes, so the
/// caller can sample CPU exactly around it.
pub fn run(spec: LoadSpec) -> std::io::Result<LoadResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stats = Rc::new(RefCell::new(Stats::default()));
        let start = Instant::now() + Duration::from_millis(20);
        let measure_at = start + spec.warmup;
        let end = measure_at + spec.duration;
        let local = tokio::task::LocalSet::new();
        let spec = Rc::new(spec);
        for i in 0..spec.conns {
            let (spec, stats) = (spec.clone(), stats.clone());
            local.spawn_local(async move {
                conn_loop(i, &spec, start, measure_at, end, &stats).await;
            });
        }
        local
            .run_until(async {
                tokio::time::sleep_until(measure_at).await;
                println!("load phase=measure");
                tokio::time::sleep_until(end).await;
                println!("load phase=done");
            })
            .await;
        // Stragglers: bounded by the request timeout.
        tokio::time::timeout(spec.timeout + Duration::from_secs(1), local)
            .await
            .ok();
        let mut st = stats.borrow_mut();
        let secs = spec.duration.as_secs_f64();
        let ok = st.lat.len() as u64;
        Ok(LoadResult {
            ok,
            errors: st.errors,
            secs,
            rps: ok as f64 / secs,
            latency_us: Percentiles::from_nanos(&mut st.lat),
            first_error: st.first_error.clone(),
        })
    })
}

async fn conn_loop(
    i: usize,
    spec: &LoadSpec,
    start: Instant,
    measure_at: Instant,
    end: Instant,
    stats: &RefCell<Stats>,
) {
    let interval = spec
        .rate
        .map(|r| Duration::from_secs_f64(spec.conns as f64 / r));
    let offset = interval.map(|iv| iv.mul_f64(i as f64 / spec.conns as f64));
    let hard_deadline = end + spec.timeout;
    let mut client = Client::None;
    let mut k: u32 = 0;
    let mut prev_done = start;
    loop {
        let intended = match (interval, offset) {
            (Some(iv), Some(off)) => start + off + iv * k,
            _ => Instant::now().max(start),
        };
        k = k.saturating_add(1);
        if intended >= end || Instant::now() >= hard_deadline {
            return;
        }
        tokio::time::sleep_until(intended).await;
        // Coordinated-omission correction: a request that was due while this
        // connection still waited for the previous answer is timed from when it
        // was due. On an idle connection it is timed from when it was sent, so
        // the timer's wake-up lateness (tokio's timer has 1 ms granularity) is
        // not charged to the system under test.
        let from = if prev_done > intended {
            intended
        } else {
            Instant::now()
        };
        let res = tokio::time::timeout(spec.timeout, client.request(spec))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {:?}", spec.timeout)));
        let done = Instant::now();
        prev_done = done;
        if res.is_err() {
            client = Client::None;
        }
        if intended < measure_at {
            continue;
        }
        let failed = {
            let mut st = stats.borrow_mut();
            match res {
                Ok(()) => {
                    st.lat.push((done - from).as_nanos() as u64);
                    false
                }
                Err(e) => {
                    st.errors += 1;
                    st.first_error.get_or_insert(e);
                    true
                }
            }
        };
        if failed {
            // Do not spin on a refused connection.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

enum Client {
    None,
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
    Tcp(TcpStream, Vec<u8>),
}

type Res = Result<(), String>;

impl Client {
    async fn request(&mut self, spec: &LoadSpec) -> Res {
        if matches!(self, Client::None) || matches!(spec.mode, Mode::Churn | Mode::TcpChurn) {
            *self = Client::connect(spec).await?;
        }
        match self {
            Client::H1(s) => {
                s.ready().await.map_err(|e| format!("h1 ready: {e}"))?;
                let mut req = Request::get("/").header("host", &spec.authority);
                if spec.mode == Mode::Churn {
                    req = req.header("connection", "close");
                }
                let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
                let resp = s.send_request(req).await.map_err(|e| format!("h1: {e}"))?;
                check(resp, spec.size).await
            }
            Client::H2(s) => {
                s.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
                let req = Request::get(format!("http://{}/", spec.authority))
                    .body(Empty::new())
                    .map_err(|e| e.to_string())?;
                let resp = s.send_request(req).await.map_err(|e| format!("h2: {e}"))?;
                check(resp, spec.size).await
            }
            Client::Tcp(stream, buf) => {
                stream
                    .write_all(&buf[..spec.size])
                    .await
                    .map_err(|e| format!("tcp write: {e}"))?;
                stream
                    .read_exact(&mut buf[spec.size..])
                    .await
                    .map_err(|e| format!("tcp read: {e}"))?;
                Ok(())
            }
            Client::None => Err("not connected".into()),
        }
    }

    async fn connect(spec: &LoadSpec) -> Result<Client, String> {
        let stream = TcpStream::connect(spec.target)
            .await
            .map_err(|e| format!("connect {}: {e}", spec.target))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        match spec.mode {
            Mode::Https1 => {
                let tls = spec.tls.as_ref().ok_or("https1 without a TLS client")?;
                let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(tls.server_name.clone(), io.into_inner())
                    .await
                    .map_err(|e| format!("TLS handshake with {}: {e}", spec.target))?;
                let (send, conn) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("h1 handshake: {e}"))?;
                tokio::task::spawn_local(conn);
                Ok(Client::H1(send))
            }
            Mode::Http1 | Mode::Churn => {
                let (send, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("h1 handshake: {e}"))?;
                tokio::task::spawn_local(conn);
                Ok(Client::H1(send))
            }
            Mode::H2c => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
                tokio::task::spawn_local(conn);
                Ok(Client::H2(send))
            }
            Mode::Tcp | Mode::TcpChurn => {
                Ok(Client::Tcp(io.into_inner(), vec![b'y'; spec.size * 2]))
            }
        }
    }
}

async fn check(resp: hyper::Response<hyper::body::Incoming>, size: usize) -> Res {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status != hyper::StatusCode::OK {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    if body.len() != size {
        return Err(format!("body of {} bytes, expected {size}", body.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut s: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let p = Percentiles::from_nanos(&mut s);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(p.mean, 500.5);
        assert_eq!(Percentiles::from_nanos(&mut []), Percentiles::default());
    }

    #[test]
    fn tls_client_needs_a_root_and_a_valid_name() {
        let err = TlsClient::new(b"not a pem", "bench.example.com").unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let ca = crate::certs::Ca::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let leaf = ca.server_leaf(dir.path(), "bench.example.com").unwrap();
        let root = std::fs::read(&leaf.root).unwrap();
        let err = TlsClient::new(&root, "bad name!").unwrap_err();
        assert!(err.to_string().contains("\"bad name!\""), "{err}");
        let ok = TlsClient::new(&root, "bench.example.com").unwrap();
        assert_eq!(ok.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
