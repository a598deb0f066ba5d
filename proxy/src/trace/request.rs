//! The span of one request: started when the request is forwarded (CLIENT on
//! the caller's side, SERVER on the callee's), finished with what its record
//! knows once the response ends (the `record` module calls `finish`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Request;
use mesh_api::tracing::{TracingProvider, TracingView};

use super::context;
use super::sample;
use super::span::{Kind, Span};
use crate::metrics::RequestLabels;
use crate::shared::Shared;

/// What a finished request tells its span.
pub(crate) struct Outcome<'a> {
    pub shared: &'a Shared,
    pub labels: &'a RequestLabels,
    pub elapsed: Duration,
    /// The endpoint that answered, if any.
    pub upstream: Option<SocketAddr>,
    pub req_bytes: u64,
    pub resp_bytes: u64,
}

/// A sampled request's span while the request runs.
pub(crate) struct Active {
    provider: TracingProvider,
    span: Span,
    port: u16,
    peer: SocketAddr,
}

fn nonzero() -> u64 {
    fastrand::u64(1..)
}

/// Starts the CLIENT span of a request this proxy sends on (sidecar outbound,
/// gateway); `authority` names its destination.
pub(crate) fn client<B>(
    req: &mut Request<B>,
    shared: &Shared,
    view: Option<&TracingView>,
    authority: &str,
    peer: SocketAddr,
    port: u16,
) -> Option<Box<Active>> {
    // The name is built only for a sampled request (the closure runs then).
    start(req, shared, view?, Kind::Client, peer, port, |path| {
        if authority.contains(':') {
            format!("{authority}{path}")
        } else {
            format!("{authority}:{port}{path}")
        }
    })
}

/// Starts the SERVER span of a request for this proxy's app; `service` is
/// the service's FQDN.
pub(crate) fn server<B>(
    req: &mut Request<B>,
    shared: &Shared,
    view: Option<&TracingView>,
    service: &str,
    peer: SocketAddr,
    port: u16,
) -> Option<Box<Active>> {
    start(req, shared, view?, Kind::Server, peer, port, |_| {
        format!("{service}:{port}/*")
    })
}

fn start<B>(
    req: &mut Request<B>,
    shared: &Shared,
    view: &TracingView,
    kind: Kind,
    peer: SocketAddr,
    port: u16,
    name: impl FnOnce(&str) -> String,
) -> Option<Box<Active>> {
    let h = req.headers();
    let incoming = context::extract(h);
    let upstream = incoming
        .and_then(|c| c.sampled)
        .or_else(|| context::decision_only(h));
    let sampled = sample::decide(
        upstream,
        sample::forced(h),
        view.sampling,
        fastrand::f64() * 100.0,
    );
    let trace = incoming
        .map(|c| (c.trace_hi, c.trace_lo))
        .unwrap_or_else(|| (fastrand::u64(..), nonzero()));
    let id = nonzero();
    let parent = incoming.map(|c| c.span_id);
    context::inject(req.headers_mut(), trace, id, parent, sampled);
    let provider = view.provider.as_ref()?;
    if !sampled || view.disable_span_reporting {
        return None;
    }
    let h = req.headers();
    let hv = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let path = req.uri().path();
    let mut tags = BTreeMap::new();
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .unwrap_or(hv("host"));
    let url = format!(
        "http://{host}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    tags.insert("http.url", url);
    tags.insert("http.method", req.method().to_string());
    tags.insert(
        "http.protocol",
        crate::util::version_str(req.version()).to_string(),
    );
    tags.insert("guid:x-request-id", hv("x-request-id").to_string());
    let custom = view
        .custom_tags
        .iter()
        .map(|(k, t)| {
            let v = if let Some(l) = &t.literal {
                l.value.clone()
            } else if let Some(e) = &t.environment {
                std::env::var(&e.name).unwrap_or_else(|_| e.default_value.clone())
            } else if let Some(hd) = &t.header {
                h.get(hd.name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| hd.default_value.clone())
            } else {
                String::new()
            };
            (k.clone(), v)
        })
        .collect();
    let me = &shared.me;
    Some(Box::new(Active {
        provider: provider.clone(),
        port,
        peer,
        span: Span {
            trace,
            id,
            parent,
            kind,
            name: name(path),
            timestamp_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or_default(),
            duration_us: 0,
            service: format!("{}.{}", me.app, me.namespace).into(),
            local_ip: shared.cfg.instance_ip,
            remote: None,
            tags,
            custom,
        },
    }))
}

/// Completes the span from what the request's record knows and queues it.
pub(crate) fn finish(a: Box<Active>, r: Outcome<'_>) {
    let Active {
        provider,
        mut span,
        port,
        peer,
    } = *a;
    let shared = r.shared;
    let cfg = &shared.cfg;
    let l = r.labels;
    span.duration_us = r.elapsed.as_micros() as u64;
    let (role, upstream_cluster) = match span.kind {
        Kind::Client => {
            span.remote = r.upstream;
            let role = if cfg.mode == crate::config::Mode::Router {
                "router"
            } else {
                "sidecar"
            };
            (role, format!("outbound|{port}||{}", l.destination_service))
        }
        Kind::Server => {
            span.remote = Some(peer);
            ("sidecar", format!("inbound|{port}||"))
        }
    };
    let ip = cfg
        .instance_ip
        .map(|i| i.to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let me = &shared.me;
    let t = &mut span.tags;
    t.insert("component", "proxy".into());
    t.insert(
        "node_id",
        format!(
            "{role}~{ip}~{}.{}~{}.svc.cluster.local",
            cfg.pod, cfg.namespace, cfg.namespace
        ),
    );
    t.insert("http.status_code", l.response_code.to_string());
    t.insert("upstream_cluster", upstream_cluster);
    t.insert("downstream_cluster", "-".into());
    t.insert("peer.address", peer.ip().to_string());
    t.insert("request_size", r.req_bytes.to_string());
    t.insert("response_size", r.resp_bytes.to_string());
    t.insert("response_flags", l.response_flags.to_string());
    if l.response_code == 0 || l.response_code >= 500 {
        t.insert("error", "true".into());
    }
    t.insert("istio.canonical_service", me.canonical_service.to_string());
    t.insert(
        "istio.canonical_revision",
        me.canonical_revision.to_string(),
    );
    t.insert("istio.namespace", me.namespace.to_string());
    t.insert("istio.mesh_id", cfg.trust_domain.clone());
    shared.tracer.submit(&provider, span);
}
