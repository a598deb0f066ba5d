//! Renders a compiled `accessLogFormat` ([`mesh_api::accesslog::Format`]) for
//! one request: each `%COMMAND%` becomes its value, an absent value `-` in a
//! text line. In a JSON format a key that is a single operator keeps its type
//! (numbers stay numbers, absent is null), as Envoy's JSON formatter does.

use mesh_api::accesslog::{Format, Operator, Piece};

use super::entry::HttpEntry;

enum Value {
    Str(String),
    Num(u64),
    Absent,
}

fn text(s: &str) -> Value {
    if s.is_empty() {
        Value::Absent
    } else {
        Value::Str(s.into())
    }
}

/// The request headers the proxy keeps for the log, by lower-case name.
fn header(e: &HttpEntry<'_>, name: &str) -> Value {
    match name {
        ":method" => text(e.method),
        ":path" => text(e.path),
        ":authority" | "host" => text(e.authority),
        "user-agent" => text(e.user_agent),
        "x-request-id" => text(e.request_id),
        _ => Value::Absent,
    }
}

fn value(op: &Operator, e: &HttpEntry<'_>, now: &str) -> Value {
    use Operator::*;
    match op {
        StartTime => text(now),
        Req(a, b) => match (header(e, a), b) {
            (Value::Absent, Some(b)) => header(e, b),
            (v, _) => v,
        },
        Resp | Absent => Value::Absent,
        Protocol => text(e.protocol),
        ResponseCode => Value::Num(e.code.into()),
        ResponseFlags => text(e.flags),
        ResponseCodeDetails => text(e.details),
        BytesReceived => Value::Num(e.bytes_received),
        BytesSent => Value::Num(e.bytes_sent),
        Duration => Value::Num(e.duration_ms),
        UpstreamHost => text(e.upstream_host),
        UpstreamCluster => text(e.upstream_cluster),
        DownstreamLocalAddress => Value::Str(e.downstream_local.to_string()),
        DownstreamRemoteAddress => Value::Str(e.downstream_remote.to_string()),
        DownstreamPeerUriSan => match e.peer_principal {
            "unknown" => Value::Absent,
            p => text(p),
        },
    }
}

fn line(pieces: &[Piece], e: &HttpEntry<'_>, now: &str) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Op(op) => match value(op, e, now) {
                Value::Str(s) => out.push_str(&s),
                Value::Num(n) => out.push_str(&n.to_string()),
                Value::Absent => out.push('-'),
            },
        }
    }
    out
}

/// The line (newline-terminated) `f` gives for `e`, started at `now`.
pub(super) fn render(f: &Format, e: &HttpEntry<'_>, now: &str) -> String {
    match f {
        Format::Text(pieces) => format!("{}\n", line(pieces, e, now)),
        Format::Json(keys) => {
            let mut map = serde_json::Map::new();
            for (k, pieces) in keys {
                let v = match pieces.as_slice() {
                    [Piece::Op(op)] => match value(op, e, now) {
                        Value::Str(s) => s.into(),
                        Value::Num(n) => n.into(),
                        Value::Absent => serde_json::Value::Null,
                    },
                    _ => line(pieces, e, now).into(),
                };
                map.insert(k.clone(), v);
            }
            format!("{}\n", serde_json::Value::Object(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_api::accesslog::{compile, compile_line, AccessLogView, Encoding};

    use super::*;

    fn entry() -> HttpEntry<'static> {
        HttpEntry {
            method: "GET",
            path: "/status/418",
            protocol: "HTTP/1.1",
            code: 418,
            flags: "-",
            details: "via_upstream",
            bytes_received: 3,
            bytes_sent: 135,
            duration_ms: 7,
            user_agent: "curl/8",
            request_id: "rid-1",
            authority: "httpbin:8000",
            upstream_host: "10.0.0.2:80",
            upstream_cluster: "outbound|8000||httpbin.default.svc.cluster.local",
            downstream_local: "10.96.0.5:8000".parse().unwrap(),
            downstream_remote: "10.0.0.1:5555".parse().unwrap(),
            peer_principal: "unknown",
            security: "none",
            headers: &[],
        }
    }

    #[test]
    fn text_line_renders_every_supported_operator() {
        let f = Format::Text(
            compile_line(
                "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
                 %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% \
                 %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(USER-AGENT)%\" \
                 \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% \
                 %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_PEER_URI_SAN% %ROUTE_NAME%",
            )
            .unwrap(),
        );
        assert_eq!(
            render(&f, &entry(), "T"),
            "[T] \"GET /status/418 HTTP/1.1\" 418 - via_upstream 3 135 7 - \"curl/8\" \"rid-1\" \
             \"httpbin:8000\" \"10.0.0.2:80\" outbound|8000||httpbin.default.svc.cluster.local \
             10.96.0.5:8000 10.0.0.1:5555 - -\n"
        );
    }

    #[test]
    fn json_keeps_types_and_renders_absent_as_null() {
        let v = AccessLogView {
            filter: None,
            encoding: Encoding::Json,
            format: Some(
                r#"{"code": "%RESPONSE_CODE%", "req": "%REQ(:METHOD)% %REQ(:PATH)%",
                    "fwd": "%REQ(X-FORWARDED-FOR)%", "peer": "%DOWNSTREAM_PEER_URI_SAN%"}"#
                    .into(),
            ),
        };
        let f = compile(&v).unwrap().unwrap();
        let mut e = entry();
        e.peer_principal = "spiffe://cluster.local/ns/default/sa/sleep";
        let out = render(&f, &e, "T");
        assert!(out.ends_with('\n'));
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"code": 418, "req": "GET /status/418", "fwd": null,
                "peer": "spiffe://cluster.local/ns/default/sa/sleep"})
        );
    }
}
