//! Inbound HTTP: each request of a connection to the app passes the policy
//! gate ([`super::gate`]), is forwarded to the local app, and is recorded
//! (Istio metrics as `reporter="destination"`, an access-log line) when its
//! response body ends; trace headers are propagated, XFCC tells the app who
//! called, and `x-request-id` is generated when absent. The checks every
//! request passes first are [`crate::conn`]'s.

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, Version};

use crate::body::Body;
use crate::conn::{ConnCtx, DrainWatch};
use crate::metrics::{Reporter, RequestLabels, Workload};
use crate::peer;
use crate::record::{metered, AccessLogLine, Record};
use crate::relay::Relay;
use crate::util::{authority_of, content_length, protocol_label, request_id, X_REQUEST_ID};

/// Serves one inbound HTTP connection (plaintext, or decrypted by
/// `inbound::tls`): every request goes to the local app.
pub async fn serve<S>(stream: S, ctx: Arc<ConnCtx>, watcher: DrainWatch)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    crate::conn::serve_http(stream, ctx, watcher, |req, ctx: Arc<ConnCtx>| async move {
        inbound(req, &ctx).await
    })
    .await
}

async fn inbound(mut req: Request<Body>, ctx: &ConnCtx) -> Response<Body> {
    let shared = &ctx.shared;
    let start = Instant::now();
    // The principal is what the peer proved with its certificate, never what
    // the metadata header claims; the app learns it from XFCC only.
    let claimed = req.headers_mut().remove(peer::HEADER);
    // Only a caller that described itself (a sidecar) learns who answered.
    let answer_metadata = claimed.is_some();
    let source = match claimed {
        Some(v) => shared.peers.source(&v, ctx.peer_identity.as_ref()),
        None => match &ctx.peer_identity {
            Some(id) => {
                let mut w = (*Workload::unknown()).clone();
                w.principal = Arc::from(id.to_string().as_str());
                Arc::new(w)
            }
            None => Workload::unknown(),
        },
    };
    // `insert` drops every value the client sent: it cannot forge XFCC.
    match &ctx.xfcc {
        Some(v) => req.headers_mut().insert(crate::mtls::XFCC, v.clone()),
        None => req.headers_mut().remove(crate::mtls::XFCC),
    };
    if !req.headers().contains_key(&X_REQUEST_ID) {
        req.headers_mut().insert(X_REQUEST_ID, request_id());
    }
    let port = ctx.orig_dst.port();
    let snap = shared.store.load();
    let gate = super::gate::check(&mut req, ctx, snap.as_deref());
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
            Workload::unknown_str(),
            Workload::unknown_str(),
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
        connection_security_policy: if ctx.peer_identity.is_some() {
            "mutual_tls"
        } else {
            "none"
        },
    };
    let log = AccessLogLine::for_request(
        shared,
        &req,
        || authority.clone().unwrap_or_default(),
        ctx.orig_dst,
        ctx.peer,
    )
    .map(|mut l| {
        l.upstream = format!("127.0.0.1:{port}");
        l.cluster = Some(format!("inbound|{port}||").into());
        l
    });
    let mut record = Record {
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
    };
    record.trace = crate::trace::request::server(
        &mut req,
        shared,
        snap.as_ref().and_then(|s| s.view.tracing.as_ref()),
        &record.labels.destination_service,
        ctx.peer,
        port,
    );
    match gate {
        Ok(false) => {}
        Ok(true) => tracing::info!(
            method = %req.method(),
            path = %req.uri().path(),
            peer = %ctx.peer,
            "request matched an AUDIT AuthorizationPolicy"
        ),
        Err(refusal) => {
            tracing::debug!(
                details = %refusal.details(),
                reason = refusal.reason().unwrap_or("-"),
                peer = %ctx.peer,
                "inbound request refused"
            );
            record.labels.response_code = refusal.status().as_u16();
            record.labels.response_flags = refusal.flags();
            if let Some(l) = record.log.as_mut() {
                l.details = refusal.details();
            }
            let mut resp = refusal.response();
            // Local replies carry the peer metadata too, so the caller's
            // metrics name this workload.
            if answer_metadata {
                resp.headers_mut()
                    .insert(peer::HEADER, shared.me_header.clone());
            }
            return metered(resp, record);
        }
    }
    let h2 = req.version() == Version::HTTP_2;
    let relay = Relay::to_app(shared, port, h2, answer_metadata);
    crate::relay::relay(req, relay, record).await
}
