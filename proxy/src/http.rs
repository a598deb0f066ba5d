//! HTTP proxying for both directions. Outbound: pick the cluster from the
//! authority (or the original destination), an endpoint by the cluster's LB
//! policy, and forward over the pooled client; unknown hosts pass through or are
//! refused (`NR`) per the outbound traffic policy. Inbound: forward to the local
//! app. Both sides record Istio metrics and access-log lines when the response
//! body ends, propagate trace headers, and generate `x-request-id` when absent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::lb::{self, RequestKeys};
use crate::metrics::{Reporter, RequestLabels, Workload};
use crate::peer;
use crate::shared::Shared;
use crate::snapshot::{Cluster, Endpoint, OutboundPolicy, Protocol, Snapshot};
use crate::upstream::Body;

/// The connection a request arrived on.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    pub orig_dst: SocketAddr,
    pub direction: Reporter,
}

pub fn full(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(msg.as_bytes()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut http::HeaderMap, keep_upgrade: bool) {
    if let Some(conn) = h
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        for name in conn.split(',').map(str::trim) {
            if keep_upgrade && name.eq_ignore_ascii_case("upgrade") {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                h.remove(n);
            }
        }
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == "connection" || name == "upgrade") {
            continue;
        }
        h.remove(name);
    }
}

fn request_id() -> HeaderValue {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    let v = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    );
    HeaderValue::from_str(&v).expect("hex is a valid header value")
}

fn protocol_label(v: Version, headers: &http::HeaderMap) -> &'static str {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"));
    match (grpc, v) {
        (true, _) => "grpc",
        (false, Version::HTTP_2) => "http",
        _ => "http",
    }
}

/// Everything needed to record the request once its response completes.
struct Record {
    shared: Arc<Shared>,
    labels: RequestLabels,
    start: Instant,
    req_bytes: u64,
    endpoint: Option<Arc<Endpoint>>,
    log: Option<AccessLogLine>,
    /// The HTTP/1 connection to give back to its pool once the body is read.
    checkin: Option<crate::pool::Checkin>,
    /// The connectionPool admission, released when the response ends.
    permit: Option<crate::limits::Permit>,
}

struct AccessLogLine {
    method: String,
    path: String,
    protocol: &'static str,
    authority: String,
    user_agent: String,
    request_id: String,
    upstream: String,
    cluster: String,
    downstream_local: SocketAddr,
    downstream_remote: SocketAddr,
}

impl Record {
    fn finish(mut self, resp_bytes: u64, complete: bool) {
        if let Some(c) = self.checkin.take() {
            if complete {
                c.done();
            }
        }
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        if let Some(ep) = &self.endpoint {
            ep.active.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(l) = &self.log {
            crate::access_log::http(
                &self.shared.cfg,
                l_fields(l, &self.labels, self.req_bytes, resp_bytes, ms),
            );
        }
        self.shared
            .metrics
            .record_request(self.labels, ms, self.req_bytes, resp_bytes);
    }
}

fn l_fields<'a>(
    l: &'a AccessLogLine,
    labels: &'a RequestLabels,
    rx: u64,
    tx: u64,
    ms: f64,
) -> crate::access_log::HttpEntry<'a> {
    crate::access_log::HttpEntry {
        method: &l.method,
        path: &l.path,
        protocol: l.protocol,
        code: labels.response_code,
        flags: labels.response_flags,
        bytes_received: rx,
        bytes_sent: tx,
        duration_ms: ms as u64,
        user_agent: &l.user_agent,
        request_id: &l.request_id,
        authority: &l.authority,
        upstream_host: &l.upstream,
        upstream_cluster: &l.cluster,
        downstream_local: l.downstream_local,
        downstream_remote: l.downstream_remote,
    }
}

/// Wraps a response body: counts bytes and records the request when the body
/// ends or is dropped.
struct Metered {
    inner: Body,
    bytes: u64,
    record: Option<Record>,
}

impl hyper::body::Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let p = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &p {
            std::task::Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_))) => {
                let n = self.bytes;
                let complete = matches!(p, std::task::Poll::Ready(None));
                if let Some(r) = self.record.take() {
                    r.finish(n, complete);
                }
            }
            _ => {}
        }
        p
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            // Dropped before the end: the connection's state is unknown.
            r.finish(self.bytes, false);
        }
    }
}

fn metered(resp: Response<Body>, record: Record) -> Response<Body> {
    let (parts, inner) = resp.into_parts();
    let body = Metered {
        inner,
        bytes: 0,
        record: Some(record),
    };
    Response::from_parts(parts, body.boxed())
}

fn content_length(h: &http::HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Requests we may send again after a connection failure: no body to replay.
fn replayable(req: &Request<Incoming>) -> bool {
    use hyper::body::Body as _;
    req.body().is_end_stream()
        || (content_length(req.headers()) == 0
            && !req.headers().contains_key(header::TRANSFER_ENCODING)
            && req.version() != Version::HTTP_2)
}

/// Request-smuggling guard: both framings at once, or a header that looks like a
/// framing header to a lenient back end (`Content_Length`, `Transfer--Encoding`)
/// is refused and the connection closed, so no later bytes on it are parsed.
fn framing_hazard(h: &http::HeaderMap) -> Option<&'static str> {
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Some("both content-length and transfer-encoding\n");
    }
    for name in h.keys() {
        let n = name.as_str();
        if n == "content-length" || n == "transfer-encoding" {
            continue;
        }
        let squashed: String = n.chars().filter(char::is_ascii_alphanumeric).collect();
        if squashed == "contentlength" || squashed == "transferencoding" {
            return Some("header name resembles a message framing header\n");
        }
    }
    None
}

/// The service entry point for both directions.
pub async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<Body>, Infallible> {
    if let Some(why) = framing_hazard(req.headers()) {
        let mut r = full(StatusCode::BAD_REQUEST, why);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(r);
    }
    let resp = match ctx.direction {
        Reporter::Source => outbound(req, &ctx).await,
        Reporter::Destination => inbound(req, &ctx).await,
    };
    let mut resp = resp;
    if ctx.shared.is_draining() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

fn authority_of(req: &Request<Incoming>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

async fn outbound(mut req: Request<Incoming>, ctx: &ConnCtx) -> Response<Body> {
    let shared = &ctx.shared;
    let Some(snap) = shared.store.load() else {
        return full(
            StatusCode::SERVICE_UNAVAILABLE,
            "proxy has no configuration yet\n",
        );
    };
    let start = Instant::now();
    let authority = authority_of(&req).unwrap_or_else(|| ctx.orig_dst.to_string());
    let cluster = snap
        .cluster_for_authority(&authority, ctx.orig_dst.port())
        .or_else(|| snap.cluster_for_dst(ctx.orig_dst))
        .cloned();
    if !req.headers().contains_key("x-request-id") {
        req.headers_mut().insert("x-request-id", request_id());
    }
    let protocol = protocol_label(req.version(), req.headers());
    let mut labels = RequestLabels {
        reporter: Reporter::Source,
        source: shared.me.clone(),
        destination: Workload::unknown(),
        destination_service: Arc::from(authority.split(':').next().unwrap_or_default()),
        destination_service_name: Arc::from(authority.split(':').next().unwrap_or_default()),
        destination_service_namespace: Arc::from("unknown"),
        request_protocol: protocol,
        response_code: 0,
        grpc_response_status: None,
        response_flags: "-",
        connection_security_policy: "unknown",
    };
    let log = (shared.cfg.access_log != crate::config::AccessLog::Off).then(|| AccessLogLine {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        protocol: version_str(req.version()),
        authority: authority.clone(),
        user_agent: header_str(req.headers(), "user-agent"),
        request_id: header_str(req.headers(), "x-request-id"),
        upstream: String::new(),
        cluster: String::new(),
        downstream_local: ctx.orig_dst,
        downstream_remote: ctx.peer,
    });
    let req_bytes = content_length(req.headers());
    let mut record = Record {
        shared: shared.clone(),
        labels: labels.clone(),
        start,
        req_bytes,
        endpoint: None,
        log,
        checkin: None,
        permit: None,
    };

    let Some(cluster) = cluster else {
        if snap.outbound_policy == OutboundPolicy::RegistryOnly {
            labels.response_code = 502;
            labels.response_flags = "NR";
            record.labels = labels;
            if let Some(l) = record.log.as_mut() {
                l.cluster = "BlackHoleCluster".into();
            }
            return metered(
                full(
                    StatusCode::BAD_GATEWAY,
                    "no route: destination is not in the mesh registry (REGISTRY_ONLY)\n",
                ),
                record,
            );
        }
        // ALLOW_ANY: pass through to where the app was going.
        if let Some(l) = record.log.as_mut() {
            l.cluster = "PassthroughCluster".into();
            l.upstream = ctx.orig_dst.to_string();
        }
        return forward(
            req,
            ctx.orig_dst,
            None,
            Protocol::Http1,
            shared,
            record,
            &snap,
        )
        .await;
    };
    labels.destination_service = cluster.host.clone();
    labels.destination_service_name = cluster.service_name.clone();
    labels.destination_service_namespace = cluster.namespace.clone();
    record.labels = labels;
    if let Some(l) = record.log.as_mut() {
        l.cluster = cluster.name.clone();
    }
    req.headers_mut()
        .insert(peer::HEADER, shared.me_header.clone());
    send_to_cluster(req, &cluster, ctx, record, &snap).await
}

async fn send_to_cluster(
    req: Request<Incoming>,
    cluster: &Arc<Cluster>,
    ctx: &ConnCtx,
    mut record: Record,
    snap: &Arc<Snapshot>,
) -> Response<Body> {
    if let Some(limits) = &cluster.limits {
        let http1 = !(req.version() == Version::HTTP_2 && cluster.protocol != Protocol::Http1);
        match limits.admit(http1).await {
            Some(p) => record.permit = Some(p),
            None => {
                record.labels.response_code = 503;
                record.labels.response_flags = "UO";
                return metered(
                    full(StatusCode::SERVICE_UNAVAILABLE, "upstream connect error or disconnect/reset before headers. reset reason: overflow\n"),
                    record,
                );
            }
        }
    }
    let keys = RequestKeys {
        headers: Some(req.headers()),
        source_ip: Some(ctx.peer.ip()),
    };
    let Some(ep) = lb::pick(&cluster.endpoints, &cluster.lb, &cluster.rr, &keys).cloned() else {
        record.labels.response_code = 503;
        record.labels.response_flags = "UH";
        return metered(
            full(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n"),
            record,
        );
    };
    record.labels.destination = endpoint_workload(&ep, cluster);
    if let Some(l) = record.log.as_mut() {
        l.upstream = ep.addr.to_string();
    }
    let proto = if req.version() == Version::HTTP_2 && cluster.protocol != Protocol::Http1 {
        Protocol::Http2
    } else {
        cluster.protocol
    };
    forward(
        req,
        ep.addr,
        Some((ep, cluster.clone())),
        proto,
        &ctx.shared,
        record,
        snap,
    )
    .await
}

/// Destination labels from the endpoint (refined by the peer's answer header).
fn endpoint_workload(ep: &Endpoint, cluster: &Cluster) -> Arc<Workload> {
    let l = |k: &str| -> Option<Arc<str>> { ep.labels.get(k).map(|v| Arc::from(v.as_str())) };
    let mut w = (*Workload::unknown()).clone();
    w.namespace = cluster.namespace.clone();
    if let Some(app) = l("app") {
        w.app = app.clone();
        w.canonical_service = app;
    }
    if let Some(v) = l("version") {
        w.version = v.clone();
        w.canonical_revision = v;
    }
    Arc::new(w)
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

fn header_str(h: &http::HeaderMap, k: &str) -> String {
    h.get(k)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// Sends `req` to `addr` (retrying a bodiless request on connection failure,
/// as Istio's default retry policy does, on another endpoint when there is one)
/// and wraps the response for metrics.
async fn forward(
    mut req: Request<Incoming>,
    addr: SocketAddr,
    mut target: Option<(Arc<Endpoint>, Arc<Cluster>)>,
    proto: Protocol,
    shared: &Arc<Shared>,
    mut record: Record,
    snap: &Arc<Snapshot>,
) -> Response<Body> {
    let is_upgrade =
        req.headers().contains_key(header::UPGRADE) && req.version() != Version::HTTP_2;
    let downstream_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    strip_hop_by_hop(req.headers_mut(), is_upgrade);
    let replay = replayable(&req);
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if parts.headers.get(header::HOST).is_none() {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| addr.to_string());
    let mut body = Some(body.boxed());
    let mut addr = addr;
    let mut attempt = 0;
    let resp = loop {
        attempt += 1;
        if let Some((ep, _)) = &target {
            ep.active.fetch_add(1, Ordering::Relaxed);
        }
        let up = match upstream_request(
            &parts,
            body.take().unwrap_or_else(empty),
            proto,
            &authority,
            &path,
        ) {
            Some(r) => r,
            None => {
                return metered(
                    full(StatusCode::BAD_REQUEST, "bad request target\n"),
                    record,
                )
            }
        };
        let result = if proto == Protocol::Http2 {
            shared
                .clients
                .outbound
                .send_h2(addr, up)
                .await
                .map(|r| (r, None))
        } else {
            shared.clients.outbound.send_h1(addr, up).await
        };
        match result {
            Ok((r, checkin)) => {
                record.endpoint = target.map(|(ep, _)| ep);
                record.checkin = checkin;
                break Ok(r);
            }
            Err(e) => {
                if let Some((ep, _)) = &target {
                    ep.active.fetch_sub(1, Ordering::Relaxed);
                }
                let connect = e.is_connect();
                tracing::debug!(%addr, error = %e, attempt, "upstream request failed");
                if connect && replay && attempt < 3 {
                    if let Some((_, cluster)) = &target {
                        // Another endpoint if there is one (Envoy's retry host predicate).
                        let others: Vec<_> = cluster
                            .endpoints
                            .iter()
                            .filter(|x| x.addr != addr)
                            .cloned()
                            .collect();
                        let keys = RequestKeys::default();
                        if let Some(next) =
                            lb::pick(&others, &cluster.lb, &cluster.rr, &keys).cloned()
                        {
                            addr = next.addr;
                            target = Some((next, cluster.clone()));
                        }
                    }
                    continue;
                }
                break Err(connect);
            }
        }
    };
    let _ = snap;
    match resp {
        Ok(mut r) => {
            let upstream_upgrade =
                (r.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut r));
            let (mut rparts, rbody) = r.into_parts();
            record.labels.response_code = rparts.status.as_u16();
            if let Some(v) = rparts.headers.remove(peer::HEADER) {
                record.labels.destination = peer::decode(&v);
            }
            record.labels.grpc_response_status = rparts
                .headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            if let Some(upstream) = upstream_upgrade {
                if let Some(down) = downstream_upgrade {
                    tokio::spawn(tunnel(down, upstream));
                }
            } else {
                strip_hop_by_hop(&mut rparts.headers, false);
            }
            metered(Response::from_parts(rparts, rbody.boxed()), record)
        }
        Err(connect) => {
            record.labels.response_code = 503;
            record.labels.response_flags = if connect { "UF" } else { "UC" };
            let msg = if connect {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure\n"
            } else {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination\n"
            };
            metered(full(StatusCode::SERVICE_UNAVAILABLE, msg), record)
        }
    }
}

/// The request as sent upstream: origin-form with `Host` for HTTP/1.1, absolute
/// with the original `:authority` for HTTP/2. Either way the authority the app
/// asked for is preserved; the connection itself goes where the pool dials.
fn upstream_request(
    parts: &http::request::Parts,
    body: Body,
    proto: Protocol,
    authority: &str,
    path: &str,
) -> Option<Request<Body>> {
    let uri = if proto == Protocol::Http2 {
        format!("http://{authority}{path}")
    } else {
        path.to_string()
    };
    let uri = uri.parse::<http::Uri>().ok()?;
    let mut up = Request::from_parts(parts.clone(), body);
    *up.uri_mut() = uri;
    if proto == Protocol::Http2 {
        *up.version_mut() = Version::HTTP_2;
        up.headers_mut().remove(header::HOST);
    } else {
        *up.version_mut() = Version::HTTP_11;
    }
    Some(up)
}

fn empty() -> Body {
    http_body_util::Empty::new().map_err(|n| match n {}).boxed()
}

/// Joins two upgraded connections (WebSocket, CONNECT) byte for byte.
async fn tunnel(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (Ok(d), Ok(u)) = (down.await, up.await) else {
        return;
    };
    let mut d = hyper_util::rt::TokioIo::new(d);
    let mut u = hyper_util::rt::TokioIo::new(u);
    let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
}

async fn inbound(mut req: Request<Incoming>, ctx: &ConnCtx) -> Response<Body> {
    let shared = &ctx.shared;
    let start = Instant::now();
    let source = req
        .headers_mut()
        .remove(peer::HEADER)
        .map(|v| peer::decode(&v))
        .unwrap_or_else(Workload::unknown);
    if !req.headers().contains_key("x-request-id") {
        req.headers_mut().insert("x-request-id", request_id());
    }
    let port = ctx.orig_dst.port();
    let snap = shared.store.load();
    // The authority names the service when several share this pod port.
    let authority = authority_of(&req);
    let cluster = snap.as_ref().and_then(|s| {
        authority
            .as_deref()
            .and_then(|a| s.cluster_for_authority(a, port))
            .filter(|c| c.endpoints.iter().any(|e| e.addr.port() == port))
            .or_else(|| s.cluster_for_dst(ctx.orig_dst))
            .cloned()
    });
    let (svc, svc_name, svc_ns) = match &cluster {
        Some(c) => (c.host.clone(), c.service_name.clone(), c.namespace.clone()),
        None => (
            Arc::from("unknown"),
            Arc::from("unknown"),
            shared.me.namespace.clone(),
        ),
    };
    let labels = RequestLabels {
        reporter: Reporter::Destination,
        source,
        destination: shared.me.clone(),
        destination_service: svc,
        destination_service_name: svc_name,
        destination_service_namespace: svc_ns,
        request_protocol: protocol_label(req.version(), req.headers()),
        response_code: 0,
        grpc_response_status: None,
        response_flags: "-",
        connection_security_policy: "none",
    };
    let log = (shared.cfg.access_log != crate::config::AccessLog::Off).then(|| AccessLogLine {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        protocol: version_str(req.version()),
        authority: authority_of(&req).unwrap_or_default(),
        user_agent: header_str(req.headers(), "user-agent"),
        request_id: header_str(req.headers(), "x-request-id"),
        upstream: format!("127.0.0.1:{port}"),
        cluster: format!("inbound|{port}||"),
        downstream_local: ctx.orig_dst,
        downstream_remote: ctx.peer,
    });
    let record = Record {
        shared: shared.clone(),
        labels,
        start,
        req_bytes: content_length(req.headers()),
        endpoint: None,
        log,
        checkin: None,
        permit: None,
    };
    let is_upgrade =
        req.headers().contains_key(header::UPGRADE) && req.version() != Version::HTTP_2;
    let downstream_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    strip_hop_by_hop(req.headers_mut(), is_upgrade);
    let h2 = req.version() == Version::HTTP_2;
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let (mut parts, body) = req.into_parts();
    if parts.headers.get(header::HOST).is_none() {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("127.0.0.1:{port}"));
    let proto = if h2 { Protocol::Http2 } else { Protocol::Http1 };
    let up = match upstream_request(&parts, body.boxed(), proto, &authority, &path) {
        Some(r) => r,
        None => {
            return metered(
                full(StatusCode::BAD_REQUEST, "bad request target\n"),
                record,
            )
        }
    };
    let app = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port);
    let result = if h2 {
        shared
            .clients
            .inbound
            .send_h2(app, up)
            .await
            .map(|r| (r, None))
    } else {
        shared.clients.inbound.send_h1(app, up).await
    };
    let mut record = record;
    match result {
        Ok((mut r, checkin)) => {
            record.checkin = checkin;
            let upstream_upgrade =
                (r.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut r));
            let (mut rparts, rbody) = r.into_parts();
            record.labels.response_code = rparts.status.as_u16();
            record.labels.grpc_response_status = rparts
                .headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            rparts
                .headers
                .insert(peer::HEADER, shared.me_header.clone());
            if let Some(upstream) = upstream_upgrade {
                if let Some(down) = downstream_upgrade {
                    tokio::spawn(tunnel(down, upstream));
                }
            } else {
                strip_hop_by_hop(&mut rparts.headers, false);
            }
            metered(Response::from_parts(rparts, rbody.boxed()), record)
        }
        Err(e) => {
            let connect = e.is_connect();
            record.labels.response_code = 503;
            record.labels.response_flags = if connect { "UF" } else { "UC" };
            metered(
                full(
                    StatusCode::SERVICE_UNAVAILABLE,
                    if connect {
                        "upstream connect error or disconnect/reset before headers. reset reason: connection failure\n"
                    } else {
                        "upstream connect error or disconnect/reset before headers. reset reason: connection termination\n"
                    },
                ),
                record,
            )
        }
    }
}
