//! Sending a routed request on: its body buffered for retries when small, the
//! cluster's connection-pool admission, the retry policy ([`super::send`]),
//! then the response wrapped for metrics with the route's response header
//! operations. Both the routed path (`outbound::route`) and a plain request to
//! a service without routes (`outbound::http`) end here.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};

use super::send::{self, Policy, ReqBody};
use crate::body::Body;
use crate::conn::ConnCtx;
use crate::lb::RequestKeys;
use crate::peer;
use crate::record::{metered, Record};
use crate::snapshot::{Cluster, Protocol};
use crate::util::{ensure_host, full, strip_hop_by_hop, tunnel};

/// Bodies up to this size are buffered so the request can be retried.
const REPLAY_LIMIT: u64 = 64 * 1024;

pub(crate) fn text(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|n| match n {}).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

pub(super) fn set(h: &mut http::HeaderMap, k: &str, v: &str) {
    if let (Ok(k), Ok(v)) = (
        HeaderName::from_bytes(k.as_bytes()),
        HeaderValue::from_str(v),
    ) {
        h.insert(k, v);
    }
}

pub(super) fn apply_ops(h: &mut http::HeaderMap, ops: &mesh_api::networking::HeaderOperations) {
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

/// Buffers small bodies so the request can be retried; streams the rest.
/// Decided from the body as hyper framed it, not from headers: by now the
/// hop-by-hop `Transfer-Encoding` is gone, and a chunked body must still be
/// streamed (and its errors seen), never taken for an empty one.
pub(super) async fn request_body(body: Body) -> Result<ReqBody, crate::body::BodyError> {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return Ok(ReqBody::Replayable(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(n) if n <= REPLAY_LIMIT => Ok(ReqBody::Replayable(body.collect().await?.to_bytes())),
        _ => Ok(ReqBody::Stream(body)),
    }
}

/// Sends to a cluster with `policy` (connection-pool admission first) and
/// wraps the response for metrics; applies response header operations.
pub(super) async fn send_to(
    mut req: Request<Body>,
    cluster: &Arc<Cluster>,
    ctx: &ConnCtx,
    mut record: Record,
    policy: &Policy,
    response_ops: Option<mesh_api::networking::HeaderOperations>,
) -> Response<Body> {
    if let Some(l) = record.log.as_mut() {
        l.cluster = Some(cluster.name.clone());
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
    let body = if is_upgrade {
        ReqBody::Stream(body)
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
    // Boxed: the attempts' future (pool, timers, retries) is most of a
    // request's state; inline, each enclosing layer (route, gateway, the
    // connection's handler) would carry it and copy it again on every await
    // that starts one.
    let result = Box::pin(send::to_cluster(
        pool,
        cluster,
        &bound,
        &parts,
        body,
        proto,
        &authority,
        policy,
        &keys,
        &ctx.shared.me_header,
    ))
    .await;
    match result {
        Ok(mut sent) => {
            let upstream_upgrade = (sent.response.status() == StatusCode::SWITCHING_PROTOCOLS)
                .then(|| hyper::upgrade::on(&mut sent.response));
            let (mut rparts, rbody) = sent.response.into_parts();
            record.labels.response_code = rparts.status.as_u16();
            if sent.attempts > 1 && rparts.status.as_u16() >= 500 {
                record.labels.response_flags = "URX";
            }
            // Only a mesh endpoint's description of itself is believed; else
            // the endpoint's labels say what they can.
            record.labels.destination = match rparts.headers.remove(peer::HEADER) {
                Some(v) if peer::for_endpoint(&sent.endpoint.tls) => {
                    ctx.shared.peers.destination(&v)
                }
                _ => ctx
                    .shared
                    .endpoint_workloads
                    .get(&sent.endpoint.labels, &cluster.namespace),
            };
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
            metered(Response::from_parts(rparts, rbody), record)
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
