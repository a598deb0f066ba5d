//! Access logging as the mesh config asks for it (`accessLogFile`,
//! `accessLogEncoding`, `accessLogFormat`): the [`AccessLogView`] the agent
//! sends each proxy, and the compiler of Envoy's `%COMMAND%` format strings.
//! The agent compiles a format to refuse a bad one at mesh-config validation;
//! the proxy compiles the same string with the same code to render it, so the
//! two cannot disagree on which operators exist.

use serde::{Deserialize, Serialize};

/// How a proxy writes its access log (always to its stdout, the container log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogView {
    pub encoding: Encoding,
    /// `accessLogFormat`; `None`: Envoy's default line (or its fields as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Telemetry `accessLogging[].filter.expression` ([`crate::accessfilter`]):
    /// only requests it matches are logged; `None`: every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Text,
    Json,
}

/// An Envoy command operator this mesh renders. Operators Envoy has but the
/// proxy has no value for (e.g. `%ROUTE_NAME%`) are accepted and render as
/// `-` (JSON: null), as Envoy renders an absent value, so Istio's documented
/// formats work unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    StartTime,
    /// `%REQ(A?B)%`: header `a`, else `b` (lower-cased names).
    Req(String, Option<String>),
    /// `%RESP(X)%`: response headers are not kept: always absent.
    Resp,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamPeerUriSan,
    /// Known to Envoy, no value here.
    Absent,
}

/// One piece of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Op(Operator),
}

/// A compiled format: a text line, or (JSON encoding) an object of key → line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Text(Vec<Piece>),
    Json(Vec<(String, Vec<Piece>)>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown access log operator %{0}%")]
    Unknown(String),
    #[error("unterminated access log operator starting {0:?} (no closing %)")]
    Unterminated(String),
    #[error("access log operator %{0}% needs a header name, e.g. %REQ(:PATH)%")]
    NoHeader(String),
    #[error("with JSON encoding the access log format must be a JSON object of strings: {0}")]
    NotJsonObject(String),
}

/// Envoy operators the proxy has no value for; accepted, rendered absent.
const ABSENT: &[&str] = &[
    "CONNECTION_TERMINATION_DETAILS",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "UPSTREAM_LOCAL_ADDRESS",
    "UPSTREAM_SERVICE_TIME",
    "REQUESTED_SERVER_NAME",
    "ROUTE_NAME",
    "CONNECTION_ID",
];

fn operator(cmd: &str) -> Result<Operator, FormatError> {
    use Operator::*;
    // `%REQ(X):N%` truncates to N characters; the length is accepted and ignored.
    let (name, arg) = match cmd.split_once('(') {
        Some((n, rest)) => {
            let inner = rest
                .rsplit_once(')')
                .map(|(a, _)| a)
                .ok_or_else(|| FormatError::Unterminated(cmd.into()))?;
            (n, Some(inner))
        }
        None => (cmd, None),
    };
    let op = match (name, arg) {
        ("REQ", Some(a)) if !a.is_empty() => {
            let (x, y) = match a.split_once('?') {
                Some((x, y)) => (x, Some(y.to_ascii_lowercase())),
                None => (a, None),
            };
            Req(x.to_ascii_lowercase(), y)
        }
        ("REQ" | "RESP", _) if arg.is_none_or(str::is_empty) => {
            return Err(FormatError::NoHeader(cmd.into()))
        }
        ("RESP", Some(_)) => Resp,
        ("START_TIME", None) => StartTime,
        ("PROTOCOL", None) => Protocol,
        ("RESPONSE_CODE", None) => ResponseCode,
        ("RESPONSE_FLAGS", None) => ResponseFlags,
        ("RESPONSE_CODE_DETAILS", None) => ResponseCodeDetails,
        ("BYTES_RECEIVED", None) => BytesReceived,
        ("BYTES_SENT", None) => BytesSent,
        ("DURATION", None) => Duration,
        ("UPSTREAM_HOST", None) => UpstreamHost,
        ("UPSTREAM_CLUSTER", None) => UpstreamCluster,
        ("DOWNSTREAM_LOCAL_ADDRESS", None) => DownstreamLocalAddress,
        ("DOWNSTREAM_REMOTE_ADDRESS", None) => DownstreamRemoteAddress,
        ("DOWNSTREAM_PEER_URI_SAN", None) => DownstreamPeerUriSan,
        (n, None) if ABSENT.contains(&n) => Absent,
        _ => return Err(FormatError::Unknown(cmd.into())),
    };
    Ok(op)
}

/// Compiles one format line: text with `%COMMAND%` operators.
pub fn compile_line(s: &str) -> Result<Vec<Piece>, FormatError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        if i > 0 {
            out.push(Piece::Text(rest[..i].into()));
        }
        let after = &rest[i + 1..];
        let j = after
            .find('%')
            .ok_or_else(|| FormatError::Unterminated(rest[i..].into()))?;
        let cmd = &after[..j];
        // `%REQ(X):N%`: drop the length limit.
        let cmd = match cmd.rsplit_once("):") {
            Some((c, n)) if n.bytes().all(|b| b.is_ascii_digit()) => &cmd[..c.len() + 1],
            _ => cmd,
        };
        out.push(Piece::Op(operator(cmd)?));
        rest = &after[j + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.into()));
    }
    Ok(out)
}

/// Compiles a view's format for its encoding (`None` when it has none).
pub fn compile(view: &AccessLogView) -> Result<Option<Format>, FormatError> {
    let Some(f) = view.format.as_deref().filter(|f| !f.trim().is_empty()) else {
        return Ok(None);
    };
    Ok(Some(match view.encoding {
        Encoding::Text => Format::Text(compile_line(f.trim_end_matches('\n'))?),
        Encoding::Json => {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(f).map_err(|e| FormatError::NotJsonObject(e.to_string()))?;
            let mut keys = Vec::new();
            for (k, v) in map {
                let s = v.as_str().ok_or_else(|| {
                    FormatError::NotJsonObject(format!("the value of {k:?} is not a string"))
                })?;
                keys.push((k, compile_line(s)?));
            }
            Format::Json(keys)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_istios_default_line() {
        let f = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
                 %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \
                 \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
                 %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \
                 \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% \
                 %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% \
                 %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";
        let p = compile_line(f).unwrap();
        assert_eq!(p[0], Piece::Text("[".into()));
        assert_eq!(p[1], Piece::Op(Operator::StartTime));
        assert!(p.contains(&Piece::Op(Operator::Req(
            "x-envoy-original-path".into(),
            Some(":path".into())
        ))));
        assert!(p.contains(&Piece::Op(Operator::Resp)));
    }

    #[test]
    fn refuses_unknown_operator_by_name() {
        let e = compile_line("%START_TIME% %BOGUS_THING%").unwrap_err();
        assert_eq!(e, FormatError::Unknown("BOGUS_THING".into()));
        assert!(e.to_string().contains("%BOGUS_THING%"));
        assert!(matches!(
            compile_line("a %DURATION"),
            Err(FormatError::Unterminated(_))
        ));
        assert!(matches!(
            compile_line("%REQ()%"),
            Err(FormatError::NoHeader(_))
        ));
        // Only REQ/RESP take an argument.
        assert!(compile_line("%DURATION(1)%").is_err());
    }

    #[test]
    fn truncation_suffix_and_plain_text() {
        assert_eq!(
            compile_line("x %REQ(:PATH):10% y").unwrap(),
            vec![
                Piece::Text("x ".into()),
                Piece::Op(Operator::Req(":path".into(), None)),
                Piece::Text(" y".into())
            ]
        );
        assert_eq!(
            compile_line("plain").unwrap(),
            vec![Piece::Text("plain".into())]
        );
    }

    #[test]
    fn json_format_is_an_object_of_lines() {
        let v = AccessLogView {
            encoding: Encoding::Json,
            format: Some(r#"{"code": "%RESPONSE_CODE%", "m": "%REQ(:METHOD)%"}"#.into()),
            filter: None,
        };
        let Some(Format::Json(keys)) = compile(&v).unwrap() else {
            panic!("json")
        };
        assert_eq!(keys.len(), 2);
        let bad = AccessLogView {
            encoding: Encoding::Json,
            format: Some("%RESPONSE_CODE%".into()),
            filter: None,
        };
        assert!(matches!(compile(&bad), Err(FormatError::NotJsonObject(_))));
        let unknown = AccessLogView {
            encoding: Encoding::Json,
            format: Some(r#"{"a": "%NOPE%"}"#.into()),
            filter: None,
        };
        assert_eq!(compile(&unknown), Err(FormatError::Unknown("NOPE".into())));
        let none = AccessLogView {
            encoding: Encoding::Text,
            format: None,
            filter: None,
        };
        assert_eq!(compile(&none), Ok(None));
    }

    #[test]
    fn view_round_trips_and_skips_absent_format() {
        let v = AccessLogView {
            encoding: Encoding::Text,
            format: None,
            filter: None,
        };
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(s, r#"{"encoding":"text"}"#);
        assert_eq!(serde_json::from_str::<AccessLogView>(&s).unwrap(), v);
    }
}
