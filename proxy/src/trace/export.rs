//! Span export off the request path: a bounded queue per collector, drained
//! by one task that POSTs batches (Zipkin v2 JSON) over a kept-alive HTTP/1.1
//! connection. A full queue or a failed POST drops spans and counts them; a
//! request never waits for the collector. A broken connection is reopened for
//! the next batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mesh_api::tracing::TracingProvider;
use tokio::sync::mpsc;

use super::span::{zipkin_json, Span};

/// Spans waiting for export, per collector; beyond this they are dropped.
const QUEUE: usize = 4096;
/// Spans per POST.
const BATCH: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const POST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Counters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

/// The proxy's span exporter (one per proxy, in [`crate::shared::Shared`]).
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

type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    #[error("POST to {0}: {1}")]
    Post(String, String),
    #[error("collector {0} answered {1}")]
    Status(String, u16),
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
}

async fn run(provider: TracingProvider, mut rx: mpsc::Receiver<Span>, counters: Arc<Counters>) {
    let mut conn: Option<Conn> = None;
    let mut batch = Vec::with_capacity(BATCH);
    // Ends when the provider changes (the sender is dropped) and the queue is empty.
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let n = batch.len() as u64;
        match post(&provider, &mut conn, &batch).await {
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

async fn post(
    provider: &TracingProvider,
    conn: &mut Option<Conn>,
    batch: &[Span],
) -> Result<(), ExportError> {
    let TracingProvider::Zipkin { address } = provider else {
        return Err(ExportError::Unsupported("OpenTelemetry export"));
    };
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
            .await
            .map_err(|_| ExportError::Connect(address.clone(), "timed out".into()))?
            .map_err(|e| ExportError::Connect(address.clone(), e.to_string()))?;
        let (send, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| ExportError::Connect(address.clone(), e.to_string()))?;
        tokio::spawn(c);
        *conn = Some(send);
    }
    let send = conn.as_mut().expect("connected above");
    let req = http::Request::post("/api/v2/spans")
        .header(http::header::HOST, address.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(zipkin_json(batch))))
        .expect("static request parts");
    let resp = tokio::time::timeout(POST_TIMEOUT, async {
        send.ready().await?;
        let r = send.send_request(req).await?;
        let status = r.status();
        // Read the answer to the end so the connection can carry the next batch.
        r.into_body().collect().await?;
        Ok::<_, hyper::Error>(status)
    })
    .await
    .map_err(|_| ExportError::Post(address.clone(), "timed out".into()))?
    .map_err(|e| ExportError::Post(address.clone(), e.to_string()))?;
    if !resp.is_success() {
        return Err(ExportError::Status(address.clone(), resp.as_u16()));
    }
    Ok(())
}
