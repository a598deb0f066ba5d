//! `meshctl dashboard` and `meshctl local dashboard`: one web page on loopback
//! with the mesh's service graph, a detail row per workload and recent traces.
//!
//! The numbers come from the sidecars' own metrics (`istio_requests_total`,
//! `istio_request_duration_milliseconds_bucket`, `istio_tcp_*` on each pod's
//! 15090), scraped every few seconds: a rate is the change between the newest
//! scrape and the oldest one of the last minute. With `--prometheus URL` they
//! come from Prometheus's query API instead (`rate(…[1m])`). Traces come from
//! a Zipkin query API: the local mesh's embedded collector, or `--zipkin URL`.
//!
//! The graph model, the SVG and the page are plain functions ([`graph`],
//! [`svg`], [`page`]); this file is the shell: one thread that does the
//! blocking reads through a [`Backend`] (where the pods are reachable), and an
//! axum server on a listener the caller bound.

pub mod cluster_mode;
pub mod graph;
pub mod page;
pub mod prom;
pub mod svg;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use tokio::sync::oneshot;

use crate::zipkin::Span;
use prom::Sample;

/// Scrapes kept for rates: a minute's worth, as `rate(…[1m])`.
const WINDOW: Duration = Duration::from_secs(60);
/// How often the sidecars are scraped in the background.
const EVERY: Duration = Duration::from_secs(5);
/// Traces shown.
const TRACES: usize = 20;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Port on 127.0.0.1 (0: a free one; the URL is printed).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Read rates from this Prometheus (`http://HOST:PORT`) instead of scraping
    /// the sidecars. Local mode reaches it from the mesh's node namespace.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Read traces from this Zipkin query API (`http://HOST:PORT`) instead of
    /// the local mesh's embedded collector.
    #[arg(long, value_name = "URL")]
    pub zipkin: Option<String>,
    /// Seconds between the page's automatic reloads (0: none).
    #[arg(long, default_value_t = 10)]
    pub refresh: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("{flag} {url:?}: only http://HOST:PORT[/PATH] URLs are supported")]
    Url { flag: String, url: String },
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("dashboard server: {0}")]
    Io(#[from] std::io::Error),
}

/// An `http://` URL split for [`crate::http_get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host:port`.
    pub addr: String,
    /// Path prefix without a trailing `/` (often empty).
    pub base: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.addr, self.base)
    }
}

pub fn parse_url(flag: &str, url: &str) -> Result<Url, DashboardError> {
    let bad = || DashboardError::Url {
        flag: flag.into(),
        url: url.into(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok {
        return Err(bad());
    }
    Ok(Url {
        addr,
        base: path.trim_end_matches('/').to_string(),
    })
}

/// `application/x-www-form-urlencoded` for a query value.
pub fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// Where the sidecars and the URLs are read from (blocking calls, on the
/// dashboard's reader thread).
pub trait Backend: Send + 'static {
    /// What the page's title names (`local mesh "demo"`, `cluster …`).
    fn name(&self) -> String;
    /// The sidecars to scrape, `namespace/pod`.
    fn targets(&mut self) -> Result<Vec<String>, String>;
    /// One sidecar's Prometheus text (15090 `/stats/prometheus`).
    fn scrape(&mut self, target: &str) -> Result<String, String>;
    /// A GET of `url`'s `path_and_query`.
    fn get(&mut self, url: &Url, path_and_query: &str) -> Result<String, String>;
}

/// One scrape of every sidecar.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    pods: BTreeMap<String, Vec<Sample>>,
    problems: Vec<String>,
}

enum Job {
    Scrape(oneshot::Sender<Snapshot>),
    Get(Url, String, oneshot::Sender<Result<String, String>>),
}

/// The reader thread: owns the backend, answers jobs one at a time.
fn reader(mut b: Box<dyn Backend>) -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::spawn(move || {
        for job in rx {
            match job {
                Job::Scrape(reply) => {
                    let mut snap = Snapshot {
                        at: Instant::now(),
                        pods: BTreeMap::new(),
                        problems: Vec::new(),
                    };
                    match b.targets() {
                        Ok(ts) => {
                            for t in ts {
                                match b.scrape(&t) {
                                    Ok(text) => {
                                        snap.pods.insert(t, prom::parse(&text));
                                    }
                                    Err(e) => snap.problems.push(format!("scraping {t}: {e}")),
                                }
                            }
                        }
                        Err(e) => snap.problems.push(format!("listing sidecars: {e}")),
                    }
                    let _ = reply.send(snap);
                }
                Job::Get(url, path, reply) => {
                    let _ = reply.send(b.get(&url, &path));
                }
            }
        }
    });
    tx
}

struct App {
    jobs: std::sync::mpsc::Sender<Job>,
    history: Mutex<VecDeque<Snapshot>>,
    prometheus: Option<Url>,
    zipkin: Option<Url>,
    title: String,
    refresh: u32,
}

impl App {
    async fn scrape(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Scrape(tx)).ok()?;
        rx.await.ok()
    }

    async fn get(&self, url: &Url, path: String) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Get(url.clone(), path, tx))
            .map_err(|_| "reader thread gone".to_string())?;
        rx.await.map_err(|_| "reader thread gone".to_string())?
    }

    /// Keeps `snap`, drops what fell out of the window, and returns the oldest
    /// scrape still in it (the base of the rates).
    fn remember(&self, snap: Snapshot) -> Option<Snapshot> {
        let mut h = self.history.lock().expect("history");
        while h
            .front()
            .is_some_and(|s| snap.at.duration_since(s.at) > WINDOW)
        {
            h.pop_front();
        }
        let base = h.front().cloned();
        h.push_back(snap);
        base
    }

    /// Rates from the sidecars: newest scrape over the oldest of the window.
    async fn scraped(&self) -> (Vec<Sample>, String, Vec<String>) {
        let Some(new) = self.scrape().await else {
            return (
                Vec::new(),
                String::new(),
                vec!["the reader thread stopped".into()],
            );
        };
        let base = self.remember(new.clone());
        let mut out = Vec::new();
        let mut secs = 0.0;
        for (pod, samples) in &new.pods {
            match base
                .as_ref()
                .and_then(|b| b.pods.get(pod).map(|o| (b.at, o)))
            {
                Some((at, old)) => {
                    let dt = new.at.duration_since(at).as_secs_f64();
                    secs = f64::max(secs, dt);
                    out.extend(prom::rates(old, samples, dt));
                }
                None => out.extend(prom::zero(samples)),
            }
        }
        let from = format!(
            "metrics: the sidecars' own (15090), {} scraped, rates over the last {secs:.0} s",
            new.pods.len()
        );
        (out, from, new.problems)
    }

    async fn queried(&self, p: &Url) -> (Vec<Sample>, String, Vec<String>) {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for family in prom::FAMILIES {
            let q = prom::query(family, "1m");
            let path = format!("{}/api/v1/query?query={}", p.base, urlencode(&q));
            let got = self
                .get(p, path)
                .await
                .and_then(|body| serde_json::from_str(&body).map_err(|e| e.to_string()))
                .and_then(|v| prom::from_query(family, &v).map_err(|e| e.to_string()));
            match got {
                Ok(s) => out.extend(s),
                Err(e) => problems.push(format!("prometheus {p} {q}: {e}")),
            }
        }
        (
            out,
            format!("metrics: Prometheus at {p}, rate over 1m"),
            problems,
        )
    }

    async fn traces(&self) -> (Vec<Vec<Span>>, String, Option<String>) {
        let Some(z) = &self.zipkin else {
            return (
                Vec::new(),
                "traces: none (no collector; pass --zipkin URL)".into(),
                None,
            );
        };
        let path = format!("{}/api/v2/traces?limit={TRACES}", z.base);
        let got = self
            .get(z, path)
            .await
            .and_then(|b| serde_json::from_str::<Vec<Vec<Span>>>(&b).map_err(|e| e.to_string()));
        match got {
            Ok(t) => (t, format!("traces: Zipkin API at {z}"), None),
            Err(e) => (
                Vec::new(),
                format!("traces: Zipkin API at {z}"),
                Some(format!("reading traces from {z}: {e}")),
            ),
        }
    }
}

async fn index(State(app): State<Arc<App>>) -> Html<String> {
    let (samples, metrics_from, mut problems) = match &app.prometheus {
        Some(p) => app.queried(p).await,
        None => app.scraped().await,
    };
    let (traces, traces_from, trace_problem) = app.traces().await;
    problems.extend(trace_problem);
    let meta = page::Meta {
        title: format!("Mesh dashboard — {}", app.title),
        metrics_from,
        traces_from,
        problems,
        refresh: app.refresh,
    };
    Html(page::page(&meta, &graph::build(&samples), &traces))
}

/// Serves the dashboard on `listener` (already bound) until the process ends.
pub fn serve(
    listener: std::net::TcpListener,
    backend: Box<dyn Backend>,
    args: &Args,
    urls: Urls,
) -> anyhow::Result<()> {
    let Urls { prometheus, zipkin } = urls;
    let app = Arc::new(App {
        title: backend.name(),
        jobs: reader(backend),
        history: Mutex::new(VecDeque::new()),
        prometheus,
        zipkin,
        refresh: args.refresh,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if app.prometheus.is_none() {
            // The base of the first page's rates, then one scrape every EVERY.
            let bg = app.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(s) = bg.scrape().await {
                        bg.remember(s);
                    }
                    tokio::time::sleep(EVERY).await;
                }
            });
        }
        listener.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(listener)?;
        let router = Router::new().route("/", get(index)).with_state(app);
        axum::serve(l, router).await?;
        Ok(())
    })
}

/// The `--prometheus` and `--zipkin` URLs, checked before anything is bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Urls {
    pub prometheus: Option<Url>,
    pub zipkin: Option<Url>,
}

impl Args {
    /// The URLs of the flags; `zipkin_default` (the local mesh's collector)
    /// when `--zipkin` is not given.
    pub fn urls(&self, zipkin_default: Option<Url>) -> Result<Urls, DashboardError> {
        let prometheus = self
            .prometheus
            .as_deref()
            .map(|u| parse_url("--prometheus", u))
            .transpose()?;
        let zipkin = match self.zipkin.as_deref() {
            Some(u) => Some(parse_url("--zipkin", u)?),
            None => zipkin_default,
        };
        Ok(Urls { prometheus, zipkin })
    }
}

/// Binds the dashboard's loopback port and prints its URL (the first line of
/// output, which scripts and tests read).
pub fn bind(port: u16) -> Result<std::net::TcpListener, DashboardError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|source| DashboardError::Bind { port, source })?;
    let addr = l.local_addr()?;
    println!("dashboard: http://{addr}/");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_host_port_with_an_optional_path() {
        assert_eq!(
            parse_url("--zipkin", "http://10.22.0.1:9411").unwrap(),
            Url {
                addr: "10.22.0.1:9411".into(),
                base: String::new()
            }
        );
        let u = parse_url("--prometheus", "http://prom/sub/").unwrap();
        assert_eq!((u.addr.as_str(), u.base.as_str()), ("prom:80", "/sub"));
        assert_eq!(u.to_string(), "http://prom:80/sub");
        for bad in ["https://x:1", "x:9090", "http://:9090", "http://x:port"] {
            let e = parse_url("--prometheus", bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("--prometheus"),
                "{e}"
            );
        }
        assert_eq!(
            urlencode("sum(a{b=\"c\"}) by (d)"),
            "sum%28a%7Bb%3D%22c%22%7D%29%20by%20%28d%29"
        );
    }
}
