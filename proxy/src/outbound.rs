//! The outbound request path: identify the service from the authority (or the
//! original destination), apply its VirtualService route (faults, redirects,
//! direct responses, CORS, rewrites, header operations, weighted destinations,
//! subsets, mirroring), then send with the route's timeout and retry policy.
//! Unknown hosts pass through (`ALLOW_ANY`) or get 502 `NR` (`REGISTRY_ONLY`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::http::ConnCtx;
use crate::lb::RequestKeys;
use crate::metrics::{Reporter, RequestLabels, Workload};
use crate::peer;
use crate::record::{metered, AccessLogLine, Record};
use crate::route::{self, Facts, Route};
use crate::send::{self, Policy, ReqBody};
use crate::snapshot::{Cluster, Endpoint, OutboundPolicy, Protocol, Snapshot};
use crate::body::Body;
use crate::util::{
    authority_of, content_length, ensure_host, full, protocol_label, request_id, strip_hop_by_hop,
    tunnel,
};

/// Bodies up to this size are buffered so the request can be retried.
const REPLAY_LIMIT: u64 = 64 * 1024;

pub(crate) fn text(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|n| match n {}).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

pub(crate) async fn outbound(mut req: Request<Incoming>, ctx: &ConnCtx) -> Response<Body> {
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
    let mut record = source_record(&req, ctx, &authority, start);
    let tracing = snap.view.tracing.as_ref();
    record.trace = crate::trace::request::client(
        &mut req,
        shared,
        tracing,
        &authority,
        ctx.peer,
        ctx.orig_dst.port(),
    );

    let Some(cluster) = cluster else {
        if snap.outbound_policy == OutboundPolicy::RegistryOnly {
            record.labels.response_code = 502;
            record.labels.response_flags = "NR";
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
        if let Some(l) = record.log.as_mut() {
            l.cluster = "PassthroughCluster".into();
            l.upstream = ctx.orig_dst.to_string();
        }
        return passthrough(req, ctx, record).await;
    };
    record.labels.destination_service = cluster.host.clone();
    record.labels.destination_service_name = cluster.service_name.clone();
    record.labels.destination_service_namespace = cluster.namespace.clone();

    let routes = snap.routes.for_host(&cluster.host).cloned();
    let Some(routes) = routes else {
        // No VirtualService: the service itself, Istio's default policy.
        let policy = Policy::for_route(None, None);
        return send_to(req, &cluster, ctx, record, &policy, None).await;
    };
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let (path, query) = path_q.split_once('?').unwrap_or((path_q.as_str(), ""));
    let facts = Facts {
        method: req.method().as_str(),
        path,
        query,
        scheme: "http",
        authority: &authority,
        headers: req.headers(),
        port: ctx.orig_dst.port(),
        source_labels: &shared.cfg.labels,
        source_namespace: &shared.cfg.namespace,
        gateway: None,
    };
    let Some(route) = route::select(&routes, &facts) else {
        record.labels.response_code = 404;
        record.labels.response_flags = "NR";
        return metered(text(404, ""), record);
    };
    let route = route.clone();
    let rewritten = route::rewrite_path(&route, &facts, &path_q);
    apply_route(req, route, rewritten, cluster.port, &snap, ctx, record).await
}

/// The metrics record and access-log line of a request this proxy sends on:
/// `reporter=source`, this workload (a sidecar's app, or the gateway) as the
/// source, the destination filled in once routing picks one.
pub(crate) fn source_record(
    req: &Request<Incoming>,
    ctx: &ConnCtx,
    authority: &str,
    start: Instant,
) -> Record {
    let shared = &ctx.shared;
    let host_only: Arc<str> = Arc::from(authority.split(':').next().unwrap_or_default());
    let labels = RequestLabels {
        reporter: Reporter::Source,
        source: shared.me.clone(),
        destination: Workload::unknown(),
        destination_service: host_only.clone(),
        destination_service_name: host_only,
        destination_service_namespace: Arc::from("unknown"),
        request_protocol: protocol_label(req.version(), req.headers()),
        response_code: 0,
        grpc_response_status: None,
        response_flags: "-",
        connection_security_policy: "unknown",
    };
    let log =
        AccessLogLine::for_request(shared, req, authority.to_string(), ctx.orig_dst, ctx.peer).map(
            |mut l| {
                l.upstream = String::new();
                l.cluster = String::new();
                l
            },
        );
    Record {
        shared: shared.clone(),
        labels,
        start,
        req_bytes: content_length(req.headers()),
        in_flight: None,
        upstream: None,
        log,
        checkin: None,
        permit: None,
        trace: None,
    }
}

fn roll() -> f64 {
    fastrand::f64() * 100.0
}

/// Carries out a selected route: CORS preflight, faults, redirect, direct
/// response, then the weighted destination (`fallback_port` when the
/// destination names no port and its service has several) with rewrites,
/// header operations, mirroring, timeout and retries. Sidecars and gateways
/// share it.
pub(crate) async fn apply_route(
    mut req: Request<Incoming>,
    route: Route,
    rewritten_path: Option<String>,
    fallback_port: u16,
    snap: &Arc<Snapshot>,
    ctx: &ConnCtx,
    mut record: Record,
) -> Response<Body> {
    if let Some(l) = record.log.as_mut() {
        l.cluster = route.vs.to_string();
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // CORS preflight is answered here, per the route's policy.
    if let (Some(cors), Some(origin)) = (&route.cors, &origin) {
        let preflight = req.method() == http::Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight && route::cors_allows(&route, origin) {
            let mut r = text(200, "");
            let h = r.headers_mut();
            set(h, "access-control-allow-origin", origin);
            set(
                h,
                "access-control-allow-methods",
                &cors.allow_methods.join(","),
            );
            set(
                h,
                "access-control-allow-headers",
                &cors.allow_headers.join(","),
            );
            if let Some(age) = route.cors_max_age {
                set(h, "access-control-max-age", &age.as_secs().to_string());
            }
            if cors.allow_credentials == Some(true) {
                set(h, "access-control-allow-credentials", "true");
            }
            record.labels.response_code = 200;
            return metered(r, record);
        }
    }
    if let Some(fault) = &route.fault {
        if let Some((delay, pct)) = fault.delay {
            if route::hit(pct, roll()) {
                tokio::time::sleep(delay).await;
                record.labels.response_flags = "DI";
            }
        }
        if let Some((status, pct)) = fault.abort_http {
            if route::hit(pct, roll()) {
                record.labels.response_code = status;
                record.labels.response_flags = "FI";
                return metered(text(status, "fault filter abort"), record);
            }
        }
        if let Some((grpc, pct)) = &fault.abort_grpc {
            if route::hit(*pct, roll()) {
                let mut r = text(200, "");
                set(r.headers_mut(), "content-type", "application/grpc");
                set(r.headers_mut(), "grpc-status", &grpc_code(grpc).to_string());
                set(r.headers_mut(), "grpc-message", "fault filter abort");
                record.labels.response_code = 200;
                record.labels.grpc_response_status = Some(grpc_code(grpc));
                record.labels.response_flags = "FI";
                return metered(r, record);
            }
        }
    }
    if let Some(rd) = &route.redirect {
        let scheme = rd.scheme.clone().unwrap_or_else(|| "http".into());
        let host = rd
            .authority
            .clone()
            .unwrap_or_else(|| authority_of(&req).unwrap_or_default());
        let host = match rd.port {
            Some(p) => format!("{}:{p}", host.split(':').next().unwrap_or_default()),
            None => host,
        };
        let uri = rd.uri.clone().unwrap_or_else(|| {
            req.uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "/".into())
        });
        let code = rd
            .redirect_code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(301);
        let mut r = text(code, "");
        set(
            r.headers_mut(),
            "location",
            &format!("{scheme}://{host}{uri}"),
        );
        record.labels.response_code = code;
        return metered(r, record);
    }
    if let Some((status, body)) = &route.direct_response {
        record.labels.response_code = *status;
        return metered(text(*status, body.clone()), record);
    }
    let Some(target) = route::pick_target(&route.targets, roll()).cloned() else {
        record.labels.response_code = 404;
        record.labels.response_flags = "NR";
        return metered(text(404, ""), record);
    };
    let Some(dest) = snap.destination(
        &target.host,
        target.port,
        target.subset.as_deref(),
        fallback_port,
    ) else {
        record.labels.response_code = 503;
        record.labels.response_flags = "NC";
        return metered(
            full(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n"),
            record,
        );
    };
    record.labels.destination_service = dest.host.clone();
    record.labels.destination_service_name = dest.service_name.clone();
    record.labels.destination_service_namespace = dest.namespace.clone();
    if let Some(l) = record.log.as_mut() {
        l.cluster = dest.name.clone();
    }
    // Request rewrites and header operations.
    if let Some(p) = rewritten_path {
        if let Ok(uri) = p.parse::<http::Uri>() {
            *req.uri_mut() = uri;
        }
    }
    if let Some(a) = route.rewrite.as_ref().and_then(|r| r.authority.as_ref()) {
        if let Ok(v) = HeaderValue::from_str(a) {
            req.headers_mut().insert(header::HOST, v);
            if let Some(pq) = req.uri().path_and_query().cloned() {
                *req.uri_mut() = http::Uri::from(pq);
            }
        }
    }
    if let Some(ops) = route.headers.as_ref().and_then(|h| h.request.as_ref()) {
        apply_ops(req.headers_mut(), ops);
    }
    if let Some(ops) = &target.headers {
        apply_ops(req.headers_mut(), ops);
    }
    if let Some((host, subset, port, pct)) = &route.mirror {
        if route::hit(*pct, roll()) {
            if let Some(m) = snap.destination(host, *port, subset.as_deref(), fallback_port) {
                mirror(&req, m, ctx);
            }
        }
    }
    let policy = Policy::for_route(route.retries.as_ref(), route.timeout);
    let cors = route
        .cors
        .as_ref()
        .zip(origin.filter(|o| route::cors_allows(&route, o)))
        .map(|(c, o)| (c.clone(), o));
    let mut resp = send_to(
        req,
        &dest,
        ctx,
        record,
        &policy,
        route.headers.as_ref().and_then(|h| h.response.clone()),
    )
    .await;
    if let Some((c, origin)) = cors {
        let h = resp.headers_mut();
        set(h, "access-control-allow-origin", &origin);
        if !c.expose_headers.is_empty() {
            set(
                h,
                "access-control-expose-headers",
                &c.expose_headers.join(","),
            );
        }
        if c.allow_credentials == Some(true) {
            set(h, "access-control-allow-credentials", "true");
        }
    }
    resp
}

fn set(h: &mut http::HeaderMap, k: &str, v: &str) {
    if let (Ok(k), Ok(v)) = (
        HeaderName::from_bytes(k.as_bytes()),
        HeaderValue::from_str(v),
    ) {
        h.insert(k, v);
    }
}

fn apply_ops(h: &mut http::HeaderMap, ops: &mesh_api::networking::HeaderOperations) {
    for (k, v) in &ops.set {
        set(h, k, v);
    }
    for (k, v) in &ops.add {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(k, v);
        }
    }
    for k in &ops.remove {
        h.remove(k.as_str());
    }
}

fn grpc_code(name: &str) -> u32 {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    name.parse()
        .ok()
        .or_else(|| {
            NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(name))
                .map(|i| i as u32)
        })
        .unwrap_or(2)
}

/// Fire-and-forget copy of a bodiless request to the mirror cluster, with the
/// authority suffixed `-shadow` as Envoy does.
fn mirror(req: &Request<Incoming>, cluster: Arc<Cluster>, ctx: &ConnCtx) {
    use hyper::body::Body as _;
    if !req.body().is_end_stream() && content_length(req.headers()) > 0 {
        return;
    }
    let mut parts = Request::new(()).into_parts().0;
    parts.method = req.method().clone();
    parts.uri = req.uri().clone();
    parts.headers = req.headers().clone();
    let authority = authority_of(req).unwrap_or_default();
    let shadow = match authority.split_once(':') {
        Some((h, p)) => format!("{h}-shadow:{p}"),
        None => format!("{authority}-shadow"),
    };
    if let Ok(v) = HeaderValue::from_str(&shadow) {
        parts.headers.insert(header::HOST, v);
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let pool = ctx.shared.clients.outbound.clone();
    let me = ctx.shared.me_header.clone();
    let bound = ctx.shared.state.bind(&cluster);
    tokio::spawn(async move {
        let policy = Policy {
            retries: 0,
            per_try: None,
            timeout: Some(Duration::from_secs(10)),
            on: Default::default(),
        };
        let proto = if cluster.protocol == Protocol::Http2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        };
        let keys = RequestKeys::default();
        if let Ok(sent) = send::to_cluster(
            &pool,
            &cluster,
            &bound,
            &parts,
            ReqBody::Replayable(Bytes::new()),
            proto,
            &shadow,
            &path,
            &policy,
            &keys,
            &me,
        )
        .await
        {
            // Read the answer to the end so the connection returns to its pool.
            let _ = sent.response.into_body().collect().await;
            if let Some(c) = sent.checkin {
                c.done();
            }
            // `sent.in_flight` ends here.
        }
    });
}

/// Buffers small bodies so the request can be retried; streams the rest.
/// Decided from the body as hyper framed it, not from headers: by now the
/// hop-by-hop `Transfer-Encoding` is gone, and a chunked body must still be
/// streamed (and its errors seen), never taken for an empty one.
async fn request_body(body: Incoming) -> Result<ReqBody, hyper::Error> {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return Ok(ReqBody::Replayable(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(n) if n <= REPLAY_LIMIT => Ok(ReqBody::Replayable(body.collect().await?.to_bytes())),
        _ => Ok(ReqBody::Stream(body.boxed())),
    }
}

/// Sends to a cluster with `policy` (connection-pool admission first) and
/// wraps the response for metrics; applies response header operations.
async fn send_to(
    mut req: Request<Incoming>,
    cluster: &Arc<Cluster>,
    ctx: &ConnCtx,
    mut record: Record,
    policy: &Policy,
    response_ops: Option<mesh_api::networking::HeaderOperations>,
) -> Response<Body> {
    if let Some(l) = record.log.as_mut() {
        l.cluster = cluster.name.clone();
    }
    let downstream_h2 = req.version() == Version::HTTP_2;
    let proto = if downstream_h2 && cluster.protocol != Protocol::Http1
        || cluster.protocol == Protocol::Http2
    {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let bound = ctx.shared.state.bind(cluster);
    if let Some(limits) = &cluster.limits {
        match bound
            .state
            .pool
            .admit(limits, proto == Protocol::Http1)
            .await
        {
            Some(p) => record.permit = Some(p),
            None => {
                record.labels.response_code = 503;
                record.labels.response_flags = "UO";
                return metered(
                    full(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream connect error or disconnect/reset before headers. reset reason: overflow\n",
                    ),
                    record,
                );
            }
        }
    }
    let is_upgrade = req.headers().contains_key(header::UPGRADE) && !downstream_h2;
    let downstream_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    strip_hop_by_hop(req.headers_mut(), is_upgrade);
    let (mut parts, body) = req.into_parts();
    let host = ensure_host(&mut parts);
    let authority = host.unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let body = if is_upgrade {
        ReqBody::Stream(body.boxed())
    } else {
        match request_body(body).await {
            Ok(b) => b,
            Err(_) => {
                record.labels.response_code = 400;
                record.labels.response_flags = "DC";
                return metered(
                    full(StatusCode::BAD_REQUEST, "request body could not be read\n"),
                    record,
                );
            }
        }
    };
    let keys = RequestKeys {
        headers: Some(&parts.headers),
        source_ip: Some(ctx.peer.ip()),
    };
    let pool = &ctx.shared.clients.outbound;
    let result = send::to_cluster(
        pool,
        cluster,
        &bound,
        &parts,
        body,
        proto,
        &authority,
        &path,
        policy,
        &keys,
        &ctx.shared.me_header,
    )
    .await;
    match result {
        Ok(mut sent) => {
            let upstream_upgrade = (sent.response.status() == StatusCode::SWITCHING_PROTOCOLS)
                .then(|| hyper::upgrade::on(&mut sent.response));
            let (mut rparts, rbody) = sent.response.into_parts();
            record.labels.destination = endpoint_workload(&sent.endpoint, cluster);
            record.labels.response_code = rparts.status.as_u16();
            if sent.attempts > 1 && rparts.status.as_u16() >= 500 {
                record.labels.response_flags = "URX";
            }
            // Only a mesh endpoint's description of itself is believed.
            if let Some(v) = rparts.headers.remove(peer::HEADER) {
                if peer::for_endpoint(&sent.endpoint.tls) {
                    record.labels.destination = ctx.shared.peers.destination(&v);
                }
            }
            record.labels.grpc_response_status = crate::record::grpc_status(&rparts.headers);
            if let Some(l) = record.log.as_mut() {
                l.upstream = sent.endpoint.addr.to_string();
            }
            record.in_flight = Some(sent.in_flight);
            record.upstream = Some(sent.endpoint.addr);
            record.checkin = sent.checkin;
            if let Some(up) = upstream_upgrade {
                if let Some(down) = downstream_upgrade {
                    tokio::spawn(tunnel(down, up));
                }
            } else {
                strip_hop_by_hop(&mut rparts.headers, false);
            }
            if let Some(ops) = &response_ops {
                apply_ops(&mut rparts.headers, ops);
            }
            metered(Response::from_parts(rparts, rbody.boxed()), record)
        }
        Err(f) => {
            if let Some(ep) = &f.endpoint {
                if let Some(l) = record.log.as_mut() {
                    l.upstream = ep.addr.to_string();
                }
            }
            record.labels.response_code = f.status;
            record.labels.response_flags = f.flags;
            metered(text(f.status, f.message), record)
        }
    }
}

/// Destination labels from the endpoint (refined by the peer's answer header).
fn endpoint_workload(ep: &Endpoint, cluster: &Cluster) -> Arc<Workload> {
    Workload::of_endpoint(&ep.labels, &cluster.namespace)
}

/// ALLOW_ANY: the request goes where the app sent it, one attempt.
async fn passthrough(
    mut req: Request<Incoming>,
    ctx: &ConnCtx,
    mut record: Record,
) -> Response<Body> {
    let is_upgrade =
        req.headers().contains_key(header::UPGRADE) && req.version() != Version::HTTP_2;
    let downstream_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    strip_hop_by_hop(req.headers_mut(), is_upgrade);
    let (mut parts, body) = req.into_parts();
    let authority = ensure_host(&mut parts).unwrap_or_else(|| "-".into());
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let Some(up) =
        crate::util::upstream_request(&parts, body.boxed(), Protocol::Http1, &authority, &path)
    else {
        return metered(
            full(StatusCode::BAD_REQUEST, "bad request target\n"),
            record,
        );
    };
    match ctx.shared.clients.outbound.send_h1(ctx.orig_dst, up).await {
        Ok((mut resp, checkin)) => {
            let upstream_upgrade = (resp.status() == StatusCode::SWITCHING_PROTOCOLS)
                .then(|| hyper::upgrade::on(&mut resp));
            let (mut rparts, rbody) = resp.into_parts();
            record.labels.response_code = rparts.status.as_u16();
            record.checkin = checkin;
            if let (Some(up), Some(down)) = (upstream_upgrade, downstream_upgrade) {
                tokio::spawn(tunnel(down, up));
            } else {
                strip_hop_by_hop(&mut rparts.headers, false);
            }
            metered(Response::from_parts(rparts, rbody.boxed()), record)
        }
        Err(e) if e.downstream_body_flags().is_some() => {
            record.labels.response_code = 400;
            record.labels.response_flags = e.downstream_body_flags().unwrap_or("DPE");
            metered(full(StatusCode::BAD_REQUEST, crate::pool::BAD_BODY), record)
        }
        Err(e) => {
            record.labels.response_code = 503;
            record.labels.response_flags = if e.is_connect() { "UF" } else { "UC" };
            metered(
                full(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure\n",
                ),
                record,
            )
        }
    }
}
