//! Carrying out a VirtualService route on the outbound path (a sidecar's and
//! a gateway's): CORS preflight, faults, redirects, direct responses, then the
//! weighted destination with rewrites, header operations and mirroring.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::send::{self, Policy, ReqBody};
use crate::body::Body;
use crate::conn::ConnCtx;
use crate::lb::RequestKeys;
use crate::record::{metered, Record};
use crate::route::{self, Route};
use crate::snapshot::{Cluster, Protocol, Snapshot};
use crate::util::{authority_of, content_length, full};

use super::forward::{apply_ops, send_to, set, text};

fn roll() -> f64 {
    fastrand::f64() * 100.0
}

/// Carries out a selected route: CORS preflight, faults, redirect, direct
/// response, then the weighted destination (`fallback_port` when the
/// destination names no port and its service has several) with rewrites,
/// header operations, mirroring, timeout and retries. Sidecars and gateways
/// share it.
pub(crate) async fn apply_route(
    mut req: Request<Body>,
    route: &Route,
    rewritten_path: Option<String>,
    fallback_port: u16,
    snap: &Arc<Snapshot>,
    ctx: &ConnCtx,
    mut record: Record,
) -> Response<Body> {
    if let Some(l) = record.log.as_mut() {
        l.cluster = Some(route.vs.clone());
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
        if preflight && route::cors_allows(route, origin) {
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
        let bare = || host.split(':').next().unwrap_or_default().to_string();
        let host = match (rd.port, rd.derive_port.as_deref()) {
            (Some(p), _) => format!("{}:{p}", bare()),
            // The scheme's default port: left out of the Location.
            (None, Some("FROM_PROTOCOL_DEFAULT")) => bare(),
            (None, _) => host.clone(),
        };
        let uri = match rd.uri.as_deref() {
            Some(u) if u.starts_with(route::REDIRECT_PREFIX_MARKER) => {
                rewritten_path.clone().unwrap_or_else(|| "/".into())
            }
            Some(u) => u.to_string(),
            None => req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "/".into()),
        };
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
        l.cluster = Some(dest.name.clone());
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
        .zip(origin.filter(|o| route::cors_allows(route, o)))
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
fn mirror(req: &Request<Body>, cluster: Arc<Cluster>, ctx: &ConnCtx) {
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
