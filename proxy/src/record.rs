//! What is recorded about each proxied request: Istio metrics and the access
//! log line, written when the response body ends (or is dropped), together with
//! releasing the endpoint's in-flight count, the connection-pool admission and
//! the upstream HTTP/1 connection back to its pool (each a guard dropped here).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;

use crate::body::Body;
use crate::metrics::RequestLabels;
use crate::shared::Shared;

/// Everything needed to record the request once its response completes.
pub(crate) struct Record {
    pub(crate) shared: Arc<Shared>,
    pub(crate) labels: RequestLabels,
    pub(crate) start: Instant,
    pub(crate) req_bytes: u64,
    /// The chosen endpoint's in-flight count, ended when the response ends.
    pub(crate) in_flight: Option<crate::state::InFlight>,
    /// The endpoint the request was sent to, once one answered.
    pub(crate) upstream: Option<SocketAddr>,
    /// Boxed: only when access logging is on, and the record travels by
    /// value through every layer of a request's future.
    pub(crate) log: Option<Box<AccessLogLine>>,
    /// The HTTP/1 connection to give back to its pool once the body is read.
    pub(crate) checkin: Option<crate::pool::Checkin>,
    /// The connectionPool admission, released when the response ends.
    pub(crate) permit: Option<crate::limits::Permit>,
    /// The request's span, when it is sampled ([`crate::trace`]).
    pub(crate) trace: Option<Box<crate::trace::request::Active>>,
}

pub(crate) struct AccessLogLine {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) protocol: &'static str,
    pub(crate) authority: String,
    pub(crate) user_agent: String,
    pub(crate) request_id: String,
    pub(crate) upstream: String,
    /// Shares the snapshot's cluster name (no copy per request).
    pub(crate) cluster: Option<std::sync::Arc<str>>,
    pub(crate) downstream_local: SocketAddr,
    pub(crate) downstream_remote: SocketAddr,
    /// Envoy's `%RESPONSE_CODE_DETAILS%` when the proxy answered itself.
    pub(crate) details: String,
    /// The request headers the access-log filter reads, as the request had them.
    pub(crate) headers: Vec<(String, String)>,
}

impl AccessLogLine {
    /// The request's access-log fields, or `None` when access logging is off
    /// (then nothing is copied: `authority` is called only when on).
    pub(crate) fn for_request<B>(
        shared: &crate::shared::Shared,
        req: &http::Request<B>,
        authority: impl FnOnce() -> String,
        downstream_local: SocketAddr,
        downstream_remote: SocketAddr,
    ) -> Option<Box<AccessLogLine>> {
        use crate::util::{header_str, version_str};
        let setting = shared.access_log.peek();
        (setting.mode != crate::access_log::Mode::Off).then(|| {
            Box::new(AccessLogLine {
                method: req.method().to_string(),
                path: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                protocol: version_str(req.version()),
                authority: authority(),
                user_agent: header_str(req.headers(), "user-agent"),
                request_id: header_str(req.headers(), "x-request-id"),
                upstream: String::new(),
                cluster: None,
                downstream_local,
                downstream_remote,
                details: String::new(),
                headers: setting
                    .headers
                    .iter()
                    .filter_map(|h| {
                        Some((h.clone(), req.headers().get(h)?.to_str().ok()?.to_string()))
                    })
                    .collect(),
            })
        })
    }
}

impl Record {
    pub(crate) fn finish(mut self, resp_bytes: u64, complete: bool) {
        if let Some(c) = self.checkin.take() {
            if complete {
                c.done();
            }
        }
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        drop(self.in_flight.take());
        if let Some(t) = self.trace.take() {
            let outcome = crate::trace::request::Outcome {
                shared: &self.shared,
                labels: &self.labels,
                elapsed: self.start.elapsed(),
                upstream: self.upstream,
                req_bytes: self.req_bytes,
                resp_bytes,
            };
            crate::trace::request::finish(t, outcome);
        }
        if let Some(l) = &self.log {
            crate::access_log::http(
                &self.shared.access_log,
                l_fields(l, &self.labels, self.req_bytes, resp_bytes, ms),
            );
        }
        self.shared
            .metrics
            .record_request(self.labels, ms, self.req_bytes, resp_bytes);
    }
}

pub(crate) fn l_fields<'a>(
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
        details: if l.details.is_empty() {
            "-"
        } else {
            &l.details
        },
        bytes_received: rx,
        bytes_sent: tx,
        duration_ms: ms as u64,
        user_agent: &l.user_agent,
        request_id: &l.request_id,
        authority: &l.authority,
        upstream_host: &l.upstream,
        upstream_cluster: l.cluster.as_deref().unwrap_or_default(),
        downstream_local: l.downstream_local,
        downstream_remote: l.downstream_remote,
        peer_principal: match labels.reporter {
            crate::metrics::Reporter::Destination => &labels.source.principal,
            crate::metrics::Reporter::Source => "unknown",
        },
        security: labels.connection_security_policy,
        headers: &l.headers,
    }
}

/// Wraps a response body: counts bytes and records the request when the body
/// ends or is dropped.
pub(crate) struct Metered {
    inner: Body,
    bytes: u64,
    record: Option<Record>,
}

impl hyper::body::Body for Metered {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let p = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &p {
            std::task::Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                } else if let Some(t) = f.trailers_ref() {
                    // A gRPC call's status normally comes in trailers (only
                    // a trailers-only answer carries it in the headers).
                    if let Some(code) = grpc_status(t) {
                        if let Some(r) = self.record.as_mut() {
                            r.labels.grpc_response_status = Some(code);
                        }
                    }
                }
                // hyper stops polling once the body says it has ended, so the
                // final `None` may never come: finish here.
                if self.inner.is_end_stream() {
                    let n = self.bytes;
                    if let Some(r) = self.record.take() {
                        r.finish(n, true);
                    }
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
            // Dropped: complete only if the body had been read to its end
            // (e.g. an empty body hyper never polled); otherwise the
            // connection's state is unknown and it is not reused.
            let complete = hyper::body::Body::is_end_stream(&self.inner);
            r.finish(self.bytes, complete);
        }
    }
}

/// The `grpc-status` of a header or trailer block, when it holds a number.
pub(crate) fn grpc_status(h: &http::HeaderMap) -> Option<u32> {
    // A parsed name: a `&str` key is parsed and validated on every lookup.
    const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    h.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

pub(crate) fn metered(resp: Response<Body>, record: Record) -> Response<Body> {
    let (parts, inner) = resp.into_parts();
    let body = Metered {
        inner,
        bytes: 0,
        record: Some(record),
    };
    Response::from_parts(parts, body.boxed())
}
