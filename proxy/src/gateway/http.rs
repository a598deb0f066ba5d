//! A request through a gateway server: the server (pinned by TLS, else chosen
//! by `:authority`), its `httpsRedirect`, the bound VirtualService whose hosts
//! cover the request host, and its first matching route — then the sidecar's
//! route code carries it (`outbound::route::apply_route`). No server, no
//! VirtualService or no route: 404 with response flag `NR`, as Envoy answers.

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, StatusCode};

use super::{Bound, GatewayConn, Server};
use crate::body::Body;
use crate::conn::{ConnCtx, DrainWatch};
use crate::outbound::forward::text;
use crate::outbound::http::source_record;
use crate::outbound::route::apply_route;
use crate::record::metered;
use crate::route::{Facts, Route};
use crate::util::{authority_of, full, request_id, X_REQUEST_ID};

/// Serves HTTP on a gateway connection: every request is routed by the
/// port's servers (`gw.server` when TLS already chose one).
pub(crate) async fn serve<S>(stream: S, ctx: Arc<ConnCtx>, watcher: DrainWatch, gw: GatewayConn)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    crate::conn::serve_http(stream, ctx, watcher, move |req, ctx: Arc<ConnCtx>| {
        let gw = gw.clone();
        async move { route(req, &ctx, &gw).await }
    })
    .await
}

/// What the routing of one request decided (pure, see [`decide`]).
pub enum Decision<'a> {
    /// No server or VirtualService covers the host.
    NoRoute,
    /// The server redirects every request to HTTPS.
    Redirect(String),
    /// The routes of the VirtualService for the host, on `server`.
    Routes(&'a Server, &'a Bound<Route>),
}

/// The host part of an authority, lower case (`[v6]:port` kept whole);
/// borrowed when it already is (what clients send).
pub fn host_of(authority: &str) -> std::borrow::Cow<'_, str> {
    let a = authority.trim_end_matches('.');
    let host = match a.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || a.starts_with('[') => {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                a
            }
        }
        _ => a,
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    }
}

/// Picks the server and VirtualService for `host` on a port. `pinned`: the
/// server TLS chose (the host must still be one of its hosts).
pub fn decide<'a>(
    servers: &'a [Arc<Server>],
    pinned: Option<&'a Arc<Server>>,
    host: &str,
    path_and_query: &str,
) -> Decision<'a> {
    let server = match pinned {
        Some(s) => super::best_rank(&s.hosts, host).map(|_| s),
        None => super::pick(
            servers.iter().filter(|s| !s.is_tls() && s.is_http()),
            |s| &s.hosts,
            host,
        ),
    };
    let Some(server) = server else {
        return Decision::NoRoute;
    };
    if server.https_redirect {
        return Decision::Redirect(format!("https://{host}{path_and_query}"));
    }
    match super::pick(server.http.iter(), |b| &b.hosts, host) {
        Some(vs) => Decision::Routes(server, vs),
        None => Decision::NoRoute,
    }
}

/// What an edge proxy tells the app about the caller (Envoy at a gateway,
/// `use_remote_address`): the scheme it used, its address appended to
/// `x-forwarded-for`, and `x-envoy-external-address`.
pub fn edge_headers(h: &mut http::HeaderMap, scheme: &'static str, peer: std::net::IpAddr) {
    use http::header::HeaderName;
    const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const EXTERNAL: HeaderName = HeaderName::from_static("x-envoy-external-address");
    h.insert(PROTO, http::HeaderValue::from_static(scheme));
    let Ok(ip) = http::HeaderValue::try_from(peer.to_string()) else {
        return;
    };
    let xff = match h.get(&XFF).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            http::HeaderValue::try_from(format!("{prev}, {}", peer)).ok()
        }
        _ => Some(ip.clone()),
    };
    if let Some(xff) = xff {
        h.insert(XFF, xff);
    }
    h.insert(EXTERNAL, ip);
}

pub(crate) async fn route(
    mut req: Request<Body>,
    ctx: &ConnCtx,
    gw: &GatewayConn,
) -> Response<Body> {
    let Some(snap) = ctx.shared.store.load() else {
        return full(
            StatusCode::SERVICE_UNAVAILABLE,
            "proxy has no configuration yet\n",
        );
    };
    let start = Instant::now();
    let authority = authority_of(&req).unwrap_or_default();
    if !req.headers().contains_key(&X_REQUEST_ID) {
        req.headers_mut().insert(X_REQUEST_ID, request_id());
    }
    let mut record = source_record(&req, ctx, &authority, start);
    let tracing = snap.view.tracing.as_ref();
    record.trace = crate::trace::request::client(
        &mut req,
        &ctx.shared,
        tracing,
        &authority,
        ctx.peer,
        gw.port,
    );
    let table = snap
        .gateway
        .as_ref()
        .and_then(|g| g.ports.get(&gw.port).cloned());
    let host = host_of(&authority);
    let path_q = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let decision = match &table {
        Some(t) => decide(&t.servers, gw.server.as_ref(), &host, path_q),
        None => Decision::NoRoute,
    };
    let (server, vs) = match decision {
        Decision::NoRoute => {
            record.labels.response_code = 404;
            record.labels.response_flags = "NR";
            return metered(text(404, ""), record);
        }
        Decision::Redirect(location) => {
            let mut r = text(301, "");
            if let Ok(v) = http::HeaderValue::from_str(&location) {
                r.headers_mut().insert(http::header::LOCATION, v);
            }
            record.labels.response_code = 301;
            return metered(r, record);
        }
        Decision::Routes(s, vs) => (s, vs),
    };
    let (path, query) = path_q.split_once('?').unwrap_or((path_q, ""));
    let service_port = table.as_ref().map(|t| t.service_port).unwrap_or(gw.port);
    let facts = Facts {
        method: req.method().as_str(),
        path,
        query,
        scheme: if server.is_tls() { "https" } else { "http" },
        authority: &authority,
        headers: req.headers(),
        port: service_port,
        source_labels: &ctx.shared.cfg.labels,
        source_namespace: &ctx.shared.cfg.namespace,
        gateway: Some(&server.gateway),
    };
    let Some(route) = crate::route::select(&vs.routes, &facts) else {
        record.labels.response_code = 404;
        record.labels.response_flags = "NR";
        return metered(text(404, ""), record);
    };
    let rewritten = crate::route::rewrite_path(route, &facts, path_q);
    let scheme = if server.is_tls() { "https" } else { "http" };
    edge_headers(req.headers_mut(), scheme, ctx.peer.ip());
    // A destination without port: its service's only port, else none (503 NC).
    apply_route(req, route, rewritten, 0, &snap, ctx, record).await
}
