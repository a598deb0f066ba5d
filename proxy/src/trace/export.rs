//! Span export off the request path: a bounded queue per collector, drained
//! by one task that sends batches over one kept-alive connection: Zipkin v2
//! JSON (`POST /api/v2/spans`, HTTP/1.1), OTLP/HTTP protobuf (`POST` to the
//! provider's path, HTTP/1.1) or OTLP/gRPC (`TraceService/Export` over
//! cleartext HTTP/2 with prior knowledge). A full queue, a failed send, an
//! error status or a non-zero `grpc-status` drops the batch's spans and counts
//! them; a request never waits for the collector. A broken connection is
//! reopened for the next batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::body::Body;
use crate::mtls::stream::MaybeTls;
use mesh_api::tracing::TracingProvider;
use tokio::sync::mpsc;

use super::otlp;
use super::span::{zipkin_json, Span};

/// Spans waiting for export, per collector; beyond this they are dropped.
const QUEUE: usize = 4096;
/// Spans per request to the collector.
const BATCH: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Counters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

/// The proxy's span exporter (one per proxy, in `Shared`).
#[derive(Debug, Default)]
pub struct Tracer {
    current: Mutex<Option<(TracingProvider, mpsc::Sender<Span>)>>,
    pub counters: Arc<Counters>,
}

impl Tracer {
    /// Queues `span` for `provider`, starting (or replacing) its export task.
    pub fn submit(&self, provider: &TracingProvider, span: Span) {
        let mut cur = self.current.lock().expect("tracer lock");
        if cur.as_ref().is_none_or(|(p, _)| p != provider) {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(provider.clone(), rx, self.counters.clone()));
            *cur = Some((provider.clone(), tx));
        }
        let (_, tx) = cur.as_ref().expect("set above");
        if tx.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus lines for `/stats/prometheus`.
    pub fn render(&self) -> String {
        let c = &self.counters;
        format!(
            "# TYPE mesh_tracing_spans_exported_total counter\nmesh_tracing_spans_exported_total {}\n# TYPE mesh_tracing_spans_dropped_total counter\nmesh_tracing_spans_dropped_total {}\n",
            c.exported.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed)
        )
    }
}

/// Where and how one provider's batches go.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    address: String,
    path: String,
    encoding: Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    ZipkinJson,
    OtlpHttp,
    OtlpGrpc,
}

impl Target {
    fn of(provider: &TracingProvider) -> Target {
        match provider {
            TracingProvider::Zipkin { address } => Target {
                address: address.clone(),
                path: "/api/v2/spans".into(),
                encoding: Encoding::ZipkinJson,
            },
            TracingProvider::Opentelemetry {
                address,
                http: true,
                path,
            } => Target {
                address: address.clone(),
                path: match path.as_str() {
                    "" => otlp::HTTP_PATH.into(),
                    p if p.starts_with('/') => p.into(),
                    p => format!("/{p}"),
                },
                encoding: Encoding::OtlpHttp,
            },
            TracingProvider::Opentelemetry { address, .. } => Target {
                address: address.clone(),
                path: otlp::GRPC_PATH.into(),
                encoding: Encoding::OtlpGrpc,
            },
        }
    }

    /// The request that carries `batch`; Err names a path or address that
    /// makes no request (the batch is dropped).
    fn request(&self, batch: &[Span]) -> Result<http::Request<Body>, ExportError> {
        let (content_type, body) = match self.encoding {
            Encoding::ZipkinJson => ("application/json", zipkin_json(batch)),
            Encoding::OtlpHttp => ("application/x-protobuf", otlp::export_request(batch)),
            Encoding::OtlpGrpc => (
                "application/grpc",
                otlp::grpc_frame(&otlp::export_request(batch)),
            ),
        };
        let b = if self.encoding == Encoding::OtlpGrpc {
            // HTTP/2 takes :scheme and :authority from the URI.
            http::Request::post(format!("http://{}{}", self.address, self.path))
                .header(http::header::TE, "trailers")
        } else {
            http::Request::post(self.path.as_str()).header(http::header::HOST, &self.address)
        };
        b.header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::USER_AGENT, "mesh-proxy")
            .body(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed())
            .map_err(|e| {
                ExportError::Request(
                    format!("http://{}{}", self.address, self.path),
                    e.to_string(),
                )
            })
    }
}

enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::H1(c) => c.is_closed(),
            Conn::H2(c) => c.is_closed(),
        }
    }

    async fn send(
        &mut self,
        req: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Conn::H1(c) => {
                c.ready().await?;
                c.send_request(req).await
            }
            Conn::H2(c) => {
                c.ready().await?;
                c.send_request(req).await
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    #[error("send to {0}: {1}")]
    Send(String, String),
    #[error("collector {0} answered {1}")]
    Status(String, u16),
    #[error("collector {0}: {1}")]
    Grpc(String, String),
    #[error("no request can be made to {0:?}: {1}")]
    Request(String, String),
}

async fn run(provider: TracingProvider, mut rx: mpsc::Receiver<Span>, counters: Arc<Counters>) {
    let target = Target::of(&provider);
    let mut conn: Option<Conn> = None;
    let mut batch = Vec::with_capacity(BATCH);
    // Ends when the provider changes (the sender is dropped) and the queue is empty.
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let n = batch.len() as u64;
        match send(&target, &mut conn, &batch).await {
            Ok(()) => counters.exported.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                conn = None;
                tracing::debug!(error = %e, spans = n, "span export failed; spans dropped");
                counters.dropped.fetch_add(n, Ordering::Relaxed)
            }
        };
        batch.clear();
    }
}

async fn connect(target: &Target) -> Result<Conn, ExportError> {
    let address = &target.address;
    let err = |e: &dyn std::fmt::Display| ExportError::Connect(address.clone(), e.to_string());
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| err(&"timed out"))?
        .map_err(|e| err(&e))?;
    let _ = tcp.set_nodelay(true);
    // The pool's stream and body types: hyper's client code is then compiled
    // into the sidecar once, not once more for the exporter.
    let io = hyper_util::rt::TokioIo::new(MaybeTls::Plain(tcp));
    Ok(if target.encoding == Encoding::OtlpGrpc {
        let (send, c) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| err(&e))?;
        tokio::spawn(c);
        Conn::H2(send)
    } else {
        let (send, c) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| err(&e))?;
        tokio::spawn(c);
        Conn::H1(send)
    })
}

async fn send(target: &Target, conn: &mut Option<Conn>, batch: &[Span]) -> Result<(), ExportError> {
    let address = &target.address;
    let req = target.request(batch)?;
    let (status, headers, trailers) = tokio::time::timeout(SEND_TIMEOUT, async {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(connect(target).await?);
        }
        let send_err = |e: hyper::Error| ExportError::Send(address.clone(), e.to_string());
        let c = conn.as_mut().expect("connected above");
        let r = c.send(req).await.map_err(send_err)?;
        let (parts, body) = r.into_parts();
        // Read the answer to the end so the connection can carry the next batch.
        let body = body.collect().await.map_err(send_err)?;
        Ok::<_, ExportError>((parts.status, parts.headers, body.trailers().cloned()))
    })
    .await
    .map_err(|_| ExportError::Send(address.clone(), "timed out".into()))??;
    if !status.is_success() {
        return Err(ExportError::Status(address.clone(), status.as_u16()));
    }
    if target.encoding == Encoding::OtlpGrpc {
        otlp::grpc_outcome(&headers, trailers.as_ref())
            .map_err(|e| ExportError::Grpc(address.clone(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otel(http: bool, path: &str) -> TracingProvider {
        TracingProvider::Opentelemetry {
            address: "otel.observability:4317".into(),
            http,
            path: path.into(),
        }
    }

    #[test]
    fn each_provider_gets_its_path_encoding_and_headers() {
        let batch = [crate::trace::span::tests::example()];
        let t = Target::of(&otel(false, "/ignored"));
        assert_eq!(t.encoding, Encoding::OtlpGrpc);
        let r = t.request(&batch).unwrap();
        assert_eq!(
            r.uri().to_string(),
            "http://otel.observability:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["te"], "trailers");
        for (path, want) in [
            ("", "/v1/traces"),
            ("/otlp/v1/traces", "/otlp/v1/traces"),
            ("v1/t", "/v1/t"),
        ] {
            let t = Target::of(&otel(true, path));
            assert_eq!((t.encoding, t.path.as_str()), (Encoding::OtlpHttp, want));
            let r = t.request(&batch).unwrap();
            assert_eq!(r.uri(), want);
            assert_eq!(r.headers()["host"], "otel.observability:4317");
            assert_eq!(r.headers()["content-type"], "application/x-protobuf");
        }
        let z = Target::of(&TracingProvider::Zipkin {
            address: "zipkin:9411".into(),
        });
        let r = z.request(&batch).unwrap();
        assert_eq!(r.uri(), "/api/v2/spans");
        assert_eq!(r.headers()["content-type"], "application/json");
        // A path no request line can carry: an error naming it, no panic.
        let e = Target::of(&otel(true, "/v1/my traces"))
            .request(&batch)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"http://otel.observability:4317/v1/my traces\""),
            "{e}"
        );
    }
}
