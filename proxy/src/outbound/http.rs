//! The outbound HTTP request path: identify the service from the authority
//! (or the original destination), apply its VirtualService route
//! ([`super::route`]: faults, redirects, direct responses, CORS, rewrites,
//! header operations, weighted destinations, subsets, mirroring), then send
//! with the route's timeout and retry policy ([`super::forward`]). Unknown
//! hosts pass through (`ALLOW_ANY`) or get 502 `NR` (`REGISTRY_ONLY`).

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, StatusCode};

use super::send::Policy;
use crate::body::Body;
use crate::conn::ConnCtx;
use crate::metrics::{Reporter, RequestLabels, Workload};
use crate::record::{metered, AccessLogLine, Record};
use crate::relay::Relay;
use crate::route::{self, Facts};
use crate::snapshot::OutboundPolicy;
use crate::util::{authority_of, content_length, full, protocol_label, request_id, X_REQUEST_ID};

use super::forward::{send_to, text};
use super::route::apply_route;
use crate::conn::DrainWatch;

/// Serves one outbound HTTP connection (the app's, captured): every request
/// takes the outbound path.
pub async fn serve<S>(stream: S, ctx: Arc<ConnCtx>, watcher: DrainWatch)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    crate::conn::serve_http(stream, ctx, watcher, |req, ctx: Arc<ConnCtx>| async move {
        outbound(req, &ctx).await
    })
    .await
}

pub(crate) async fn outbound(mut req: Request<Body>, ctx: &ConnCtx) -> Response<Body> {
    let shared = &ctx.shared;
    let Some(snap) = shared.store.load() else {
        return full(
            StatusCode::SERVICE_UNAVAILABLE,
            "proxy has no configuration yet\n",
        );
    };
    let start = Instant::now();
    let authority = authority_of(&req).unwrap_or_else(|| ctx.orig_dst.to_string());
    // A Host naming a service wins; else the address: a service VIP, or a
    // pod's own address (that pod, without the service's routes).
    let find = |snap: &crate::snapshot::Snapshot| {
        snap.cluster_for_authority(&authority, ctx.orig_dst.port())
            .cloned()
            .or_else(|| snap.pinned_endpoint(ctx.orig_dst))
            .or_else(|| snap.cluster_for_dst(ctx.orig_dst).cloned())
    };
    let mut cluster = find(&snap);
    // A host this on-demand view does not have (a Host header naming a mesh
    // service behind an address the proxy does not know): ask once.
    let snap = if cluster.is_none() && snap.view.on_demand {
        let snap = super::ondemand::look_up(shared, &authority, snap).await;
        cluster = find(&snap);
        snap
    } else {
        snap
    };
    if !req.headers().contains_key(&X_REQUEST_ID) {
        req.headers_mut().insert(X_REQUEST_ID, request_id());
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
                l.cluster = Some("BlackHoleCluster".into());
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
            l.cluster = Some("PassthroughCluster".into());
            l.upstream = ctx.orig_dst.to_string();
        }
        return passthrough(req, ctx, record).await;
    };
    // Used now, and not ageing out while the request is in flight.
    let _in_use = super::ondemand::in_use(shared, &cluster.host);
    record.labels.destination_service = cluster.host.clone();
    record.labels.destination_service_name = cluster.service_name.clone();
    record.labels.destination_service_namespace = cluster.namespace.clone();

    let routes = snap
        .routes
        .for_host(&cluster.host)
        .filter(|_| !cluster.pinned)
        .cloned();
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
    let rewritten = route::rewrite_path(route, &facts, &path_q);
    apply_route(req, route, rewritten, cluster.port, &snap, ctx, record).await
}

/// The metrics record and access-log line of a request this proxy sends on:
/// `reporter=source`, this workload (a sidecar's app, or the gateway) as the
/// source, the destination filled in once routing picks one.
pub(crate) fn source_record(
    req: &Request<Body>,
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
        destination_service_namespace: Workload::unknown_str(),
        request_protocol: protocol_label(req.version(), req.headers()),
        response_code: 0,
        grpc_response_status: None,
        response_flags: "-",
        connection_security_policy: "unknown",
    };
    let log = AccessLogLine::for_request(
        shared,
        req,
        || authority.to_string(),
        ctx.orig_dst,
        ctx.peer,
    )
    .map(|mut l| {
        l.upstream = String::new();
        l.cluster = None;
        l
    });
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

/// ALLOW_ANY: the request goes where the app sent it, one attempt.
async fn passthrough(req: Request<Body>, ctx: &ConnCtx, record: Record) -> Response<Body> {
    let relay = Relay::passthrough(&ctx.shared, ctx.orig_dst);
    crate::relay::relay(req, relay, record).await
}
