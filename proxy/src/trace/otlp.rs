//! The OTLP form of a batch of spans: an
//! `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`, sent
//! as the body of OTLP/HTTP (`application/x-protobuf`) or, in a gRPC frame,
//! of OTLP/gRPC's `TraceService/Export`. One `ResourceSpans` per local
//! service (`service.name`), one scope (this proxy), the same span data and
//! tags as the Zipkin form; a span tagged `error` gets status ERROR.

use http::HeaderMap;

use super::proto::Writer;
use super::span::{Kind, Span};

/// The gRPC method OTLP/gRPC calls.
pub const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// OTLP/HTTP's path when the provider names none.
pub const HTTP_PATH: &str = "/v1/traces";

/// Field numbers of the OTLP messages written here (opentelemetry-proto
/// `collector/trace/v1`, `trace/v1`, `resource/v1`, `common/v1`).
mod f {
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
    pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const SCOPE_SPANS_SCOPE: u32 = 1;
    pub const SCOPE_SPANS_SPANS: u32 = 2;
    pub const SCOPE_NAME: u32 = 1;
    pub const SCOPE_VERSION: u32 = 2;
    pub const SPAN_TRACE_ID: u32 = 1;
    pub const SPAN_SPAN_ID: u32 = 2;
    pub const SPAN_PARENT_SPAN_ID: u32 = 4;
    pub const SPAN_NAME: u32 = 5;
    pub const SPAN_KIND: u32 = 6;
    pub const SPAN_START_TIME_UNIX_NANO: u32 = 7;
    pub const SPAN_END_TIME_UNIX_NANO: u32 = 8;
    pub const SPAN_ATTRIBUTES: u32 = 9;
    pub const SPAN_STATUS: u32 = 15;
    pub const STATUS_CODE: u32 = 3;
    pub const KEY_VALUE_KEY: u32 = 1;
    pub const KEY_VALUE_VALUE: u32 = 2;
    pub const ANY_VALUE_STRING_VALUE: u32 = 1;
}

/// `Span.SpanKind` values.
const SPAN_KIND_SERVER: u64 = 2;
const SPAN_KIND_CLIENT: u64 = 3;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_CODE_ERROR: u64 = 2;

/// A `KeyValue` with a string value, as field `field` of the current message.
fn attribute(w: &mut Writer, field: u32, key: &str, value: &str) {
    w.message(field, |w| {
        w.string(f::KEY_VALUE_KEY, key);
        w.message(f::KEY_VALUE_VALUE, |w| {
            w.string(f::ANY_VALUE_STRING_VALUE, value)
        });
    });
}

fn span(w: &mut Writer, s: &Span) {
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&s.trace.0.to_be_bytes());
    trace[8..].copy_from_slice(&s.trace.1.to_be_bytes());
    w.bytes(f::SPAN_TRACE_ID, &trace);
    w.bytes(f::SPAN_SPAN_ID, &s.id.to_be_bytes());
    if let Some(p) = s.parent {
        w.bytes(f::SPAN_PARENT_SPAN_ID, &p.to_be_bytes());
    }
    w.string(f::SPAN_NAME, &s.name);
    let kind = match s.kind {
        Kind::Client => SPAN_KIND_CLIENT,
        Kind::Server => SPAN_KIND_SERVER,
    };
    w.varint(f::SPAN_KIND, kind);
    let start = s.timestamp_us.saturating_mul(1000);
    w.fixed64(f::SPAN_START_TIME_UNIX_NANO, start);
    w.fixed64(
        f::SPAN_END_TIME_UNIX_NANO,
        start.saturating_add(s.exported_duration_us().saturating_mul(1000)),
    );
    let tags = s.all_tags();
    for (k, v) in &tags {
        attribute(w, f::SPAN_ATTRIBUTES, k, v);
    }
    if tags.contains_key("error") {
        w.message(f::SPAN_STATUS, |w| {
            w.varint(f::STATUS_CODE, STATUS_CODE_ERROR)
        });
    }
}

/// The serialized `ExportTraceServiceRequest` of `spans`.
pub fn export_request(spans: &[Span]) -> Vec<u8> {
    // A proxy has one local service; grouping keeps the encoding right anyway.
    let mut services: Vec<&str> = Vec::new();
    for s in spans {
        if !services.contains(&&*s.service) {
            services.push(&s.service);
        }
    }
    let mut w = Writer::with_capacity(spans.len() * 1024);
    for svc in services {
        w.message(f::REQUEST_RESOURCE_SPANS, |w| {
            w.message(f::RESOURCE_SPANS_RESOURCE, |w| {
                attribute(w, f::RESOURCE_ATTRIBUTES, "service.name", svc)
            });
            w.message(f::RESOURCE_SPANS_SCOPE_SPANS, |w| {
                w.message(f::SCOPE_SPANS_SCOPE, |w| {
                    w.string(f::SCOPE_NAME, "mesh-proxy");
                    w.string(f::SCOPE_VERSION, env!("CARGO_PKG_VERSION"));
                });
                for s in spans.iter().filter(|s| &*s.service == svc) {
                    w.message(f::SCOPE_SPANS_SPANS, |w| span(w, s));
                }
            });
        });
    }
    w.finish()
}

/// `msg` as one gRPC length-prefixed message (uncompressed).
pub fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// A gRPC call's outcome from its `grpc-status`: in the trailers, or in the
/// headers of a trailers-only answer. Err carries the code and message.
pub fn grpc_outcome(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Result<(), String> {
    let get = |n: &str| {
        trailers
            .and_then(|t| t.get(n))
            .or_else(|| headers.get(n))
            .and_then(|v| v.to_str().ok())
    };
    match get("grpc-status") {
        Some("0") => Ok(()),
        Some(code) => Err(format!(
            "grpc-status {code} ({})",
            get("grpc-message").unwrap_or("no grpc-message")
        )),
        None => Err("no grpc-status".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::span::tests::example;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
    use prost::Message;

    fn strings(kvs: &[KeyValue]) -> Vec<(String, String)> {
        kvs.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => panic!("{}: not a string value: {other:?}", kv.key),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    #[test]
    fn the_opentelemetry_types_decode_every_field() {
        let client = example();
        let mut server = example();
        server.kind = Kind::Server;
        server.id = 0x0102030405060708;
        server.parent = Some(client.id);
        server.duration_us = 1500;
        server.tags.insert("error", "true".into());
        let mut root = example();
        root.parent = None;
        root.service = "other.ns".into();
        let req =
            ExportTraceServiceRequest::decode(&export_request(&[client.clone(), root, server])[..])
                .expect("decodes");
        assert_eq!(req.resource_spans.len(), 2);
        let rs = &req.resource_spans[0];
        assert_eq!(
            strings(&rs.resource.as_ref().unwrap().attributes),
            [("service.name".to_string(), "client.default".to_string())]
        );
        assert_eq!(rs.scope_spans.len(), 1);
        let scope = rs.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(scope.name, "mesh-proxy");
        assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        let (c, s) = (&spans[0], &spans[1]);
        assert_eq!(
            hex(&c.trace_id),
            "463ac35c9f6413ad48485a3953bb6124",
            "trace id, big-endian"
        );
        assert_eq!(hex(&c.span_id), "a2fb4a1d1a96d312");
        assert_eq!(hex(&c.parent_span_id), "0020000000000001");
        assert_eq!(c.name, "echo.default.svc.cluster.local:8080/hello");
        assert_eq!(c.kind, 3, "CLIENT");
        assert_eq!(c.start_time_unix_nano, 1_700_000_000_000_000_000);
        // A zero duration is exported as 1 µs, as in the Zipkin form.
        assert_eq!(c.end_time_unix_nano, 1_700_000_000_000_001_000);
        assert_eq!(
            strings(&c.attributes),
            [
                ("component", "proxy"),
                ("http.status_code", "200"),
                ("team", "shop"),
                (
                    "upstream_cluster",
                    "outbound|8080||echo.default.svc.cluster.local"
                ),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(c.status, None, "no error: status unset");
        assert_eq!(s.kind, 2, "SERVER");
        assert_eq!(s.trace_id, c.trace_id);
        assert_eq!(s.parent_span_id, c.span_id);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 1_500_000);
        assert_eq!(s.status.as_ref().map(|st| st.code), Some(2), "ERROR");
        assert!(strings(&s.attributes).contains(&("error".into(), "true".into())));
        let other = &req.resource_spans[1];
        assert_eq!(
            strings(&other.resource.as_ref().unwrap().attributes)[0].1,
            "other.ns"
        );
        let root = &other.scope_spans[0].spans[0];
        assert!(root.parent_span_id.is_empty(), "a root span has no parent");
        // The same request, re-encoded by prost, is byte for byte ours
        // (field order and the proto3 defaults left out agree).
        let ours = export_request(&[client]);
        let theirs = ExportTraceServiceRequest::decode(&ours[..])
            .unwrap()
            .encode_to_vec();
        assert_eq!(ours, theirs);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn a_batch_of_many_spans_round_trips() {
        let spans: Vec<Span> = (0..512)
            .map(|i| {
                let mut s = example();
                s.id = i + 1;
                s.name = "n".repeat(i as usize);
                s
            })
            .collect();
        let req = ExportTraceServiceRequest::decode(&export_request(&spans)[..]).unwrap();
        let got = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(got.len(), 512);
        for (i, s) in got.iter().enumerate() {
            assert_eq!(s.span_id, (i as u64 + 1).to_be_bytes());
            assert_eq!(s.name.len(), i);
        }
        assert!(export_request(&[]).is_empty());
    }

    #[test]
    fn grpc_frames_and_statuses() {
        assert_eq!(grpc_frame(b"abc"), [0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(grpc_frame(&[1; 300])[..5], [0, 0, 0, 1, 44]);
        let mut h = HeaderMap::new();
        assert_eq!(grpc_outcome(&h, None), Err("no grpc-status".into()));
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(grpc_outcome(&h, Some(&t)), Ok(()));
        // Trailers-only: the status is in the headers.
        h.insert("grpc-status", "14".parse().unwrap());
        h.insert("grpc-message", "overloaded".parse().unwrap());
        assert_eq!(
            grpc_outcome(&h, None),
            Err("grpc-status 14 (overloaded)".into())
        );
        t.insert("grpc-status", "8".parse().unwrap());
        assert_eq!(
            grpc_outcome(&HeaderMap::new(), Some(&t)),
            Err("grpc-status 8 (no grpc-message)".into())
        );
    }
}
