//! `mesh-echo`: the test application. An HTTP/1.1 + HTTP/2 (h2c) server that
//! answers every request with a JSON description of who answered (pod, namespace,
//! service account, labels) and what it received (method, path, headers, peer), and
//! a plain TCP echo server (optionally server-first, sending a banner). Tests and
//! local mode assert on its JSON to see where a request landed and what the mesh
//! did to it.
//!
//! Query parameters let a test shape the answer: `status=503` sets the status code,
//! `delay_ms=200` delays the answer. `GET /__echo/fault?status=503&every=2` makes
//! the app itself fail (every 2nd request, or all with `every=1`) until
//! `/__echo/fault?status=0`: a failing or flaky endpoint for outlier-detection and
//! retry tests, switched from outside without restarting it. A request with `Upgrade: websocket` is
//! answered `101 Switching Protocols` and every byte sent afterwards is echoed.
//! `GET /__echo/stats` answers how many requests the app has seen and the most
//! it has had in flight at once (what a connection-pool limit must bound).
//! `GET /metrics` is the app's own Prometheus text (`mesh_echo_requests_total`),
//! where Bookinfo's productpage annotations say its metrics are.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Command-line / environment configuration of the echo app.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// HTTP port (HTTP/1.1 and h2c on the same port); repeatable.
    #[arg(long = "port", value_name = "PORT")]
    pub http_ports: Vec<u16>,
    /// Plain TCP echo port; repeatable.
    #[arg(long = "tcp-port", value_name = "PORT")]
    pub tcp_ports: Vec<u16>,
    /// Sent first on every TCP connection (a server-first protocol).
    #[arg(long)]
    pub banner: Option<String>,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    #[arg(long, env = "POD_NAME", default_value = "unknown")]
    pub pod: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,
    /// Answer every HTTP request with this status (a failing endpoint).
    #[arg(long)]
    pub always_status: Option<u16>,
    /// Print `REQUEST <method> <path>` to stdout for every HTTP request (tests
    /// use it to see exactly which requests reached the app).
    #[arg(long)]
    pub log_requests: bool,
    /// Pod labels as `k=v,k2=v2`.
    #[arg(long, env = "POD_LABELS", default_value = "", value_parser = parse_labels)]
    pub labels: BTreeMap<String, String>,
    /// The fault switched on through `/__echo/fault` (shared by all connections).
    #[arg(skip)]
    pub fault: std::sync::Arc<Fault>,
    /// Requests seen and in flight (shared by all connections).
    #[arg(skip)]
    pub load: std::sync::Arc<Load>,
}

/// What `/__echo/stats` reports: requests answered or being answered, and the
/// most that were in flight at once. The `/__echo/` requests are not counted.
#[derive(Debug, Default)]
pub struct Load {
    requests: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicU64,
    max_in_flight: std::sync::atomic::AtomicU64,
}

/// One request in flight, until dropped (when its answer is ready).
struct Serving<'a>(&'a Load);

impl Load {
    fn enter(&self) -> Serving<'_> {
        use std::sync::atomic::Ordering::SeqCst;
        self.requests.fetch_add(1, SeqCst);
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.max_in_flight.fetch_max(now, SeqCst);
        Serving(self)
    }

    fn json(&self) -> String {
        use std::sync::atomic::Ordering::SeqCst;
        format!(
            "{{\"requests\":{},\"inFlight\":{},\"maxInFlight\":{}}}",
            self.requests.load(SeqCst),
            self.in_flight.load(SeqCst),
            self.max_in_flight.load(SeqCst)
        )
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A fault the app injects into its own answers.
#[derive(Debug, Default)]
pub struct Fault {
    status: std::sync::atomic::AtomicU16,
    every: std::sync::atomic::AtomicU64,
    seen: std::sync::atomic::AtomicU64,
}

impl Fault {
    /// The status to answer the next request with, if the fault hits it.
    fn next(&self) -> Option<StatusCode> {
        use std::sync::atomic::Ordering::Relaxed;
        let status = self.status.load(Relaxed);
        if status == 0 {
            return None;
        }
        let every = self.every.load(Relaxed).max(1);
        let n = self.seen.fetch_add(1, Relaxed) + 1;
        n.is_multiple_of(every)
            .then(|| StatusCode::from_u16(status).ok())
            .flatten()
    }

    fn set(&self, query: &str) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut status = 0u16;
        let mut every = 1u64;
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            match k {
                "status" => status = v.parse().unwrap_or(0),
                "every" => every = v.parse().unwrap_or(1),
                _ => {}
            }
        }
        if StatusCode::from_u16(status).is_err() {
            status = 0;
        }
        self.status.store(status, Relaxed);
        self.every.store(every.max(1), Relaxed);
        self.seen.store(0, Relaxed);
        format!("{{\"status\":{status},\"every\":{every}}}")
    }
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!("label {p:?} is not of the form key=value")),
        })
        .collect()
}

/// What the echo app answers to every HTTP request.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EchoReply {
    pub pod: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// The `version` label, for quick split checks.
    pub version: Option<String>,
    pub method: String,
    pub path: String,
    pub query: String,
    pub protocol: String,
    /// Request headers as received; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The TCP peer of this connection (`127.0.0.6:…` when a sidecar forwarded it).
    pub peer: String,
    /// The local address the connection arrived on.
    pub local: String,
    pub body_bytes: usize,
}

/// The echo app with its listeners bound.
pub struct Echo {
    identity: std::sync::Arc<Args>,
    http: Vec<TcpListener>,
    tcp: Vec<TcpListener>,
}

impl Echo {
    /// Binds every configured port (port 0 picks a free one).
    pub async fn bind(args: Args) -> std::io::Result<Echo> {
        let mut http = Vec::new();
        for p in &args.http_ports {
            http.push(TcpListener::bind(SocketAddr::new(args.bind, *p)).await?);
        }
        let mut tcp = Vec::new();
        for p in &args.tcp_ports {
            tcp.push(TcpListener::bind(SocketAddr::new(args.bind, *p)).await?);
        }
        Ok(Echo {
            identity: std::sync::Arc::new(args),
            http,
            tcp,
        })
    }

    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = tokio::task::JoinSet::new();
        for l in self.http {
            tasks.spawn(serve_http(l, self.identity.clone()));
        }
        for l in self.tcp {
            tasks.spawn(serve_tcp(l, self.identity.banner.clone()));
        }
        shutdown.await;
        tasks.abort_all();
    }
}

async fn serve_http(listener: TcpListener, id: std::sync::Arc<Args>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let local = stream.local_addr().ok();
        let id = id.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| answer(req, id.clone(), peer, local));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        });
    }
}

async fn answer(
    mut req: Request<Incoming>,
    id: std::sync::Arc<Args>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if id.log_requests {
        println!("REQUEST {} {}", req.method(), req.uri());
    }
    if req.uri().path() == "/__echo/stats" {
        return Ok(Response::new(Full::new(Bytes::from(id.load.json()))));
    }
    // The app's own traffic only: not its fault switch or metrics scrapes.
    let _serving =
        (!matches!(req.uri().path(), "/__echo/fault" | "/metrics")).then(|| id.load.enter());
    if req
        .headers()
        .get(hyper::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
    {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on_upgrade.await {
                let mut io = TokioIo::new(up);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(hyper::header::UPGRADE, "websocket")
            .header(hyper::header::CONNECTION, "Upgrade")
            .header("x-echo-pod", &id.pod)
            .body(Full::new(Bytes::new()))
            .expect("static response parts are valid");
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let query = parts.uri.query().unwrap_or("").to_string();
    if parts.uri.path() == "/__echo/fault" {
        let body = id.fault.set(&query);
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    if parts.uri.path() == "/metrics" {
        let body = format!(
            "# TYPE mesh_echo_requests_total counter\nmesh_echo_requests_total {}\n",
            id.load.requests.load(std::sync::atomic::Ordering::SeqCst)
        );
        let resp = Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid");
        return Ok(resp);
    }
    let mut status = id
        .fault
        .next()
        .or_else(|| id.always_status.and_then(|s| StatusCode::from_u16(s).ok()))
        .unwrap_or(StatusCode::OK);
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match k {
            "status" => {
                if let Some(s) = v
                    .parse::<u16>()
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                {
                    status = s;
                }
            }
            "delay_ms" => {
                if let Ok(ms) = v.parse::<u64>() {
                    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
                }
            }
            _ => {}
        }
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    if let Some(authority) = parts.uri.authority() {
        headers
            .entry(":authority".into())
            .or_insert(authority.to_string());
    }
    let reply = EchoReply {
        pod: id.pod.clone(),
        namespace: id.namespace.clone(),
        service_account: id.service_account.clone(),
        labels: id.labels.clone(),
        version: id.labels.get("version").cloned(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query,
        protocol: format!("{:?}", parts.version),
        headers,
        peer: peer.to_string(),
        local: local.map(|l| l.to_string()).unwrap_or_default(),
        body_bytes,
    };
    let json = serde_json::to_vec(&reply).expect("reply serializes");
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-echo-pod", &id.pod)
        .body(Full::new(Bytes::from(json)))
        .expect("static response parts are valid");
    Ok(resp)
}

async fn serve_tcp(listener: TcpListener, banner: Option<String>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(echo_tcp(stream, banner.clone()));
    }
}

async fn echo_tcp(mut stream: TcpStream, banner: Option<String>) -> std::io::Result<()> {
    if let Some(b) = banner {
        stream.write_all(b.as_bytes()).await?;
        stream.write_all(b"\n").await?;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// Runs the echo app as a process: binds, prints one `mesh-echo listening …` line
/// (so harnesses know it is ready), serves until SIGTERM/SIGINT.
pub fn main_with(args: Args) -> anyhow::Result<()> {
    if args.http_ports.is_empty() && args.tcp_ports.is_empty() {
        anyhow::bail!("mesh-echo needs at least one --port or --tcp-port");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let echo = Echo::bind(args).await?;
        let fmt = |v: Vec<SocketAddr>| {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "mesh-echo listening http={} tcp={}",
            fmt(echo.http_addrs()),
            fmt(echo.tcp_addrs())
        );
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        echo.run(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await;
        Ok(())
    })
}
