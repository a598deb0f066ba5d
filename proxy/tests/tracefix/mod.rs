//! Span receivers the tracing tests run on the node's bridge address (where
//! pods reach the node): Zipkin v2 JSON (`POST /api/v2/spans`, HTTP/1.1) and
//! OTLP (gRPC `TraceService/Export` over h2c and HTTP/protobuf, decoded with
//! the OpenTelemetry project's own prost types). Every span is recorded in
//! the Zipkin v2 JSON shape, so one set of assertions reads either export.
#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use serde_json::{json, Map, Value};

use crate::common::*;

pub const OTLP_GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How one export call to a receiver arrived.
#[derive(Debug, Clone)]
pub struct Call {
    pub version: http::Version,
    pub path: String,
    pub content_type: String,
    pub te: String,
}

/// A span receiver on the node: the spans it got, in arrival order.
pub struct Collector {
    pub addr: String,
    spans: Arc<Mutex<Vec<Value>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// OTLP/gRPC: the `grpc-status` to answer with (0: accept).
    grpc_status: Arc<AtomicU32>,
}

pub fn bind_on_node(node: &Node) -> TcpListener {
    mesh_e2e::zipkin::bind_in(node.netns(), mesh_e2e::harness::GATEWAY)
}

impl Collector {
    fn new(l: &TcpListener) -> Collector {
        Collector {
            addr: l.local_addr().unwrap().to_string(),
            spans: Arc::default(),
            calls: Arc::default(),
            grpc_status: Arc::default(),
        }
    }

    /// A Zipkin v2 receiver (HTTP/1.1 keep-alive, a hand-read request).
    pub fn zipkin(node: &Node) -> Collector {
        let l = bind_on_node(node);
        let c = Collector::new(&l);
        let s = c.spans.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || mesh_e2e::zipkin::serve(c, s));
            }
        });
        c
    }

    /// An OTLP receiver: OTLP/gRPC over HTTP/2 prior knowledge and OTLP/HTTP
    /// over HTTP/1.1 on one port (hyper's auto server tells them apart).
    pub fn otlp(node: &Node) -> Collector {
        let l = bind_on_node(node);
        l.set_nonblocking(true).unwrap();
        let c = Collector::new(&l);
        let state = (c.spans.clone(), c.calls.clone(), c.grpc_status.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                while let Ok((tcp, _)) = l.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(otlp_answer(req, state).await)
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                    });
                }
            });
        });
        c
    }

    /// From now on, answer OTLP/gRPC calls with `code` (0 accepts).
    pub fn answer_grpc_status(&self, code: u32) {
        self.grpc_status.store(code, Ordering::SeqCst);
    }

    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` spans carry `x-request-id` `rid`.
    pub fn wait_for(&self, rid: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["tags"]["guid:x-request-id"] == rid)
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans of {rid}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

type OtlpState = (
    Arc<Mutex<Vec<Value>>>,
    Arc<Mutex<Vec<Call>>>,
    Arc<AtomicU32>,
);
type Answer = http::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>;

/// Records and decodes one export call; answers as a collector would.
async fn otlp_answer(req: http::Request<hyper::body::Incoming>, state: OtlpState) -> Answer {
    let (spans, calls, grpc_status) = state;
    let (parts, body) = req.into_parts();
    let hv = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let call = Call {
        version: parts.version,
        path: parts.uri.path().to_string(),
        content_type: hv("content-type"),
        te: hv("te"),
    };
    calls.lock().unwrap().push(call.clone());
    let body = body.collect().await.unwrap().to_bytes();
    let grpc = call.path == OTLP_GRPC_PATH;
    let msg = if grpc {
        // One uncompressed length-prefixed message.
        assert_eq!(body[0], 0, "compressed flag");
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        assert_eq!(body.len(), 5 + len, "one gRPC message");
        body.slice(5..)
    } else {
        body
    };
    let req = ExportTraceServiceRequest::decode(msg).expect("an ExportTraceServiceRequest");
    let code = grpc_status.load(Ordering::SeqCst);
    if !grpc || code == 0 {
        spans.lock().unwrap().extend(zipkin_shaped(&req));
    }
    let resp = ExportTraceServiceResponse::default().encode_to_vec();
    let b = http::Response::builder().status(200);
    if !grpc {
        return b
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(resp)).boxed())
            .unwrap();
    }
    if code != 0 {
        // Trailers-only: the status in the headers.
        return b
            .header("content-type", "application/grpc")
            .header("grpc-status", code.to_string())
            .header("grpc-message", "rejected by the test")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(resp.len() as u32).to_be_bytes());
    frame.extend_from_slice(&resp);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames = vec![
        Ok(Frame::data(Bytes::from(frame))),
        Ok(Frame::trailers(trailers)),
    ];
    b.header("content-type", "application/grpc")
        .body(BodyExt::boxed(StreamBody::new(futures::stream::iter(
            frames,
        ))))
        .unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn string_value(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("attribute {}: not a string: {other:?}", kv.key),
    }
}

/// The request's spans in the Zipkin v2 JSON shape (`serviceName` from the
/// resource's `service.name`), plus the OTLP `status` code.
pub fn zipkin_shaped(req: &ExportTraceServiceRequest) -> Vec<Value> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(string_value)
            .expect("resource attribute service.name");
        for ss in &rs.scope_spans {
            assert_eq!(ss.scope.as_ref().unwrap().name, "mesh-proxy");
            for s in &ss.spans {
                assert_eq!((s.trace_id.len(), s.span_id.len()), (16, 8));
                let tags: Map<String, Value> = s
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), Value::String(string_value(kv))))
                    .collect();
                let mut v = json!({
                    "traceId": hex(&s.trace_id),
                    "id": hex(&s.span_id),
                    "kind": match s.kind { 2 => "SERVER", 3 => "CLIENT", k => panic!("kind {k}") },
                    "name": s.name,
                    "timestamp": s.start_time_unix_nano / 1000,
                    "duration": s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) / 1000,
                    "localEndpoint": {"serviceName": service},
                    "tags": tags,
                    "status": s.status.as_ref().map(|st| st.code).unwrap_or(0),
                });
                if !s.parent_span_id.is_empty() {
                    v["parentId"] = hex(&s.parent_span_id).into();
                }
                out.push(v);
            }
        }
    }
    out
}
