//! Istio's standard metrics, with Istio's names and labels, so existing Grafana
//! dashboards and Kiali read our sidecars unchanged: `istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`,
//! `istio_response_bytes` (histograms) and the `istio_tcp_*` counters, each
//! reported by the `source` (outbound) or `destination` (inbound) proxy, and
//! `istio_build`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// One side of a call, as the labels describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub workload: Arc<str>,
    pub namespace: Arc<str>,
    pub principal: Arc<str>,
    pub app: Arc<str>,
    pub version: Arc<str>,
    pub canonical_service: Arc<str>,
    pub canonical_revision: Arc<str>,
}

/// Hashes the workload's name and namespace only: every request hashes two
/// workloads to find its series, and the other five strings (a principal is
/// 50 bytes or more) doubled that cost. Equal workloads still hash equal;
/// two that differ only in the rest share a bucket and `Eq` tells them apart.
impl std::hash::Hash for Workload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.workload.hash(state);
        self.namespace.hash(state);
    }
}

impl Workload {
    /// Every label `unknown` (revision `latest`): one process-wide value,
    /// since requests from callers that did not describe themselves take it.
    pub fn unknown() -> Arc<Workload> {
        static UNKNOWN: std::sync::LazyLock<Arc<Workload>> = std::sync::LazyLock::new(|| {
            let u: Arc<str> = Arc::from("unknown");
            Arc::new(Workload {
                workload: u.clone(),
                namespace: u.clone(),
                principal: u.clone(),
                app: u.clone(),
                version: u.clone(),
                canonical_service: u.clone(),
                canonical_revision: Arc::from("latest"),
            })
        });
        UNKNOWN.clone()
    }

    /// The shared `"unknown"` string of [`Workload::unknown`].
    pub fn unknown_str() -> Arc<str> {
        Workload::unknown().workload.clone()
    }
}

impl Workload {
    /// The destination as a source proxy knows it before (or without) the
    /// peer's own description: the chosen endpoint's labels and the service's
    /// namespace. The canonical service and revision follow Istio's order of
    /// labels; the workload name and principal stay `unknown`.
    pub fn of_endpoint(labels: &BTreeMap<String, String>, namespace: &Arc<str>) -> Arc<Workload> {
        let first = |keys: &[&str]| -> Option<Arc<str>> {
            keys.iter()
                .find_map(|k| labels.get(*k))
                .map(|v| Arc::from(v.as_str()))
        };
        let mut w = (*Workload::unknown()).clone();
        w.namespace = namespace.clone();
        if let Some(app) = first(&["app"]) {
            w.app = app;
        }
        if let Some(v) = first(&["version"]) {
            w.version = v;
        }
        if let Some(s) = first(&[CANONICAL_NAME, "app.kubernetes.io/name", "app"]) {
            w.canonical_service = s;
        }
        if let Some(r) = first(&[CANONICAL_REVISION, "app.kubernetes.io/version", "version"]) {
            w.canonical_revision = r;
        }
        Arc::new(w)
    }
}

/// A mesh endpoint as a proxy knows it: labels, namespace, service account.
pub type EndpointFacts<'a> = (&'a BTreeMap<String, String>, &'a Arc<str>, Option<&'a str>);

impl Workload {
    /// The source of an inbound mTLS connection with no request to carry its
    /// description (TCP): the verified identity, and the canonical service of
    /// the mesh endpoint at its address, believed only when that endpoint is in
    /// the identity's namespace and runs as its service account (an address
    /// alone proves nothing).
    pub fn of_peer(
        principal: &str,
        namespace: &str,
        service_account: &str,
        endpoint: Option<EndpointFacts<'_>>,
    ) -> Arc<Workload> {
        let mut w = match endpoint {
            Some((labels, ns, sa)) if &**ns == namespace && sa == Some(service_account) => {
                (*Workload::of_endpoint(labels, ns)).clone()
            }
            _ => (*Workload::unknown()).clone(),
        };
        w.principal = Arc::from(principal);
        w.namespace = Arc::from(namespace);
        Arc::new(w)
    }
}

const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// Istio's `reporter` label: the proxy on the calling side reports as
/// `source`, the one in front of the app as `destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    Source,
    Destination,
}

impl From<crate::direction::Direction> for Reporter {
    fn from(d: crate::direction::Direction) -> Reporter {
        match d {
            crate::direction::Direction::Outbound => Reporter::Source,
            crate::direction::Direction::Inbound => Reporter::Destination,
        }
    }
}

/// Labels of one request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestLabels {
    pub reporter: Reporter,
    pub source: Arc<Workload>,
    pub destination: Arc<Workload>,
    pub destination_service: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub grpc_response_status: Option<u32>,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

impl RequestLabels {
    /// Equal because every shared label is the same allocation (a cheap
    /// test: `false` says nothing, `Eq` decides then).
    fn same_as(&self, o: &RequestLabels) -> bool {
        self.reporter == o.reporter
            && self.response_code == o.response_code
            && Arc::ptr_eq(&self.source, &o.source)
            && Arc::ptr_eq(&self.destination, &o.destination)
            && Arc::ptr_eq(&self.destination_service, &o.destination_service)
            && Arc::ptr_eq(&self.destination_service_name, &o.destination_service_name)
            && Arc::ptr_eq(
                &self.destination_service_namespace,
                &o.destination_service_namespace,
            )
            && self.request_protocol == o.request_protocol
            && self.grpc_response_status == o.grpc_response_status
            && self.response_flags == o.response_flags
            && self.connection_security_policy == o.connection_security_policy
    }
}

/// Labels of one TCP series (no per-request fields).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpLabels {
    pub reporter: Reporter,
    pub source: Arc<Workload>,
    pub destination: Arc<Workload>,
    pub destination_service: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
const BYTES_BUCKETS: [f64; 8] = [
    1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        if let Some(i) = buckets.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct RequestStats {
    total: u64,
    duration: Histogram,
    req_bytes: Histogram,
    resp_bytes: Histogram,
}

#[derive(Debug, Default)]
struct TcpStats {
    opened: u64,
    closed: u64,
    sent: u64,
    received: u64,
}

type Hasher = foldhash::fast::RandomState;

/// The request series in the order they appeared, found by their labels,
/// and the one the last request was counted in. Consecutive requests mostly
/// carry the very same labels (one peer, one answer, the same shared strings):
/// comparing pointers first spares hashing some twenty label strings per
/// request (see `peer::PeerCache` for what the two fast paths saved).
#[derive(Debug, Default)]
struct RequestSeries {
    series: Vec<(RequestLabels, RequestStats)>,
    index: HashMap<RequestLabels, usize, Hasher>,
    last: usize,
}

impl RequestSeries {
    /// The series of `labels`, created if new.
    fn of(&mut self, labels: RequestLabels) -> &mut RequestStats {
        let last = self.series.get(self.last).map(|(l, _)| l);
        if !last.is_some_and(|l| l.same_as(&labels)) {
            let next = self.series.len();
            self.last = match self.index.entry(labels) {
                std::collections::hash_map::Entry::Occupied(e) => *e.get(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    self.series.push((e.key().clone(), RequestStats::default()));
                    *e.insert(next)
                }
            };
        }
        &mut self.series[self.last].1
    }
}

/// The registry. One short, uncontended lock per finished request or connection.
#[derive(Debug, Default)]
pub struct Metrics {
    // Hashed with foldhash (seeded per process): SipHash over every label
    // string was a visible part of the per-request cost.
    requests: Mutex<RequestSeries>,
    tcp: Mutex<HashMap<TcpLabels, TcpStats, Hasher>>,
    /// Inbound mTLS handshakes that failed (bad chain, no certificate, old TLS).
    mtls_failed: std::sync::atomic::AtomicU64,
    /// Inbound plaintext connections refused by PeerAuthentication STRICT.
    strict_refused: std::sync::atomic::AtomicU64,
    /// Downstream connections refused or closed by the connection limits.
    pub conn: crate::downstream::ConnCounters,
    /// Gateway listeners and TLS (`router` mode).
    pub gateway: crate::gateway::Counters,
    /// Views refused because a resource could not be compiled (NACKed).
    config_rejected: std::sync::atomic::AtomicU64,
    /// Settings applied but decided against (unusable TLS files, ...).
    config_warnings: std::sync::atomic::AtomicU64,
}

impl Metrics {
    pub fn mtls_handshake_failed(&self) {
        self.mtls_failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn config_rejected(&self) {
        self.config_rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn config_warnings(&self, n: usize) {
        self.config_warnings
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn strict_refused(&self) {
        self.strict_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn record_request(
        &self,
        labels: RequestLabels,
        duration_ms: f64,
        req_bytes: u64,
        resp_bytes: u64,
    ) {
        let mut m = self.requests.lock().expect("metrics lock");
        let s = m.of(labels);
        s.total += 1;
        s.duration.observe(&DURATION_BUCKETS, duration_ms);
        s.req_bytes.observe(&BYTES_BUCKETS, req_bytes as f64);
        s.resp_bytes.observe(&BYTES_BUCKETS, resp_bytes as f64);
    }

    pub fn tcp_opened(&self, labels: &TcpLabels) {
        let mut m = self.tcp.lock().expect("metrics lock");
        m.entry(labels.clone()).or_default().opened += 1;
    }

    /// `sent` is towards the destination workload, `received` back from it.
    pub fn tcp_closed(&self, labels: TcpLabels, sent: u64, received: u64) {
        let mut m = self.tcp.lock().expect("metrics lock");
        let s = m.entry(labels).or_default();
        s.closed += 1;
        s.sent += sent;
        s.received += received;
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let reqs = self.requests.lock().expect("metrics lock");
        out.push_str("# TYPE istio_requests_total counter\n");
        for (l, s) in &reqs.series {
            let _ = writeln!(
                out,
                "istio_requests_total{{{}}} {}",
                request_labels(l),
                s.total
            );
        }
        for (name, pick, buckets) in [
            (
                "istio_request_duration_milliseconds",
                0,
                &DURATION_BUCKETS[..],
            ),
            ("istio_request_bytes", 1, &BYTES_BUCKETS[..]),
            ("istio_response_bytes", 2, &BYTES_BUCKETS[..]),
        ] {
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (l, s) in &reqs.series {
                let h = match pick {
                    0 => &s.duration,
                    1 => &s.req_bytes,
                    _ => &s.resp_bytes,
                };
                let labels = request_labels(l);
                let mut cum = 0;
                for (i, b) in buckets.iter().enumerate() {
                    cum += h.counts.get(i).copied().unwrap_or(0);
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
            }
        }
        drop(reqs);
        let tcp = self.tcp.lock().expect("metrics lock");
        for (name, pick) in [
            ("istio_tcp_connections_opened_total", 0),
            ("istio_tcp_connections_closed_total", 1),
            ("istio_tcp_sent_bytes_total", 2),
            ("istio_tcp_received_bytes_total", 3),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (l, s) in tcp.iter() {
                let v = [s.opened, s.closed, s.sent, s.received][pick];
                let _ = writeln!(out, "{name}{{{}}} {v}", tcp_labels(l));
            }
        }
        drop(tcp);
        for (name, v) in [
            (
                "mesh_inbound_mtls_handshake_errors_total",
                &self.mtls_failed,
            ),
            ("mesh_inbound_plaintext_refused_total", &self.strict_refused),
            ("mesh_proxy_config_rejected_total", &self.config_rejected),
            ("mesh_proxy_config_warnings_total", &self.config_warnings),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(
                out,
                "{name} {}",
                v.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        self.conn.render(&mut out);
        self.gateway.render(&mut out);
        // Envoy's build gauge as Istio's proxies report it: the mesh and
        // component-version panels of the dashboards count sidecars by it.
        let _ = writeln!(
            out,
            "# TYPE istio_build gauge\nistio_build{{component=\"proxy\",tag=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn workload_labels(out: &mut String, side: &str, w: &Workload) {
    let _ = write!(
        out,
        "{side}_workload=\"{}\",{side}_canonical_service=\"{}\",{side}_canonical_revision=\"{}\",\
         {side}_workload_namespace=\"{}\",{side}_principal=\"{}\",{side}_app=\"{}\",{side}_version=\"{}\",\
         {side}_cluster=\"Kubernetes\",",
        esc(&w.workload),
        esc(&w.canonical_service),
        esc(&w.canonical_revision),
        esc(&w.namespace),
        esc(&w.principal),
        esc(&w.app),
        esc(&w.version),
    );
}

fn common(
    reporter: Reporter,
    src: &Workload,
    dst: &Workload,
    svc: &str,
    svc_name: &str,
    svc_ns: &str,
) -> String {
    let mut out = String::with_capacity(512);
    let r = match reporter {
        Reporter::Source => "source",
        Reporter::Destination => "destination",
    };
    let _ = write!(out, "reporter=\"{r}\",");
    workload_labels(&mut out, "source", src);
    workload_labels(&mut out, "destination", dst);
    let _ = write!(
        out,
        "destination_service=\"{}\",destination_service_name=\"{}\",destination_service_namespace=\"{}\"",
        esc(svc),
        esc(svc_name),
        esc(svc_ns)
    );
    out
}

fn request_labels(l: &RequestLabels) -> String {
    let mut out = common(
        l.reporter,
        &l.source,
        &l.destination,
        &l.destination_service,
        &l.destination_service_name,
        &l.destination_service_namespace,
    );
    let grpc = l
        .grpc_response_status
        .map(|g| g.to_string())
        .unwrap_or_default();
    let _ = write!(
        out,
        ",request_protocol=\"{}\",response_code=\"{}\",grpc_response_status=\"{grpc}\",response_flags=\"{}\",connection_security_policy=\"{}\"",
        l.request_protocol, l.response_code, l.response_flags, l.connection_security_policy
    );
    out
}

fn tcp_labels(l: &TcpLabels) -> String {
    let mut out = common(
        l.reporter,
        &l.source,
        &l.destination,
        &l.destination_service,
        &l.destination_service_name,
        &l.destination_service_namespace,
    );
    let _ = write!(
        out,
        ",request_protocol=\"tcp\",response_flags=\"{}\",connection_security_policy=\"{}\"",
        l.response_flags, l.connection_security_policy
    );
    out
}

#[cfg(test)]
mod tests;
