//! Zipkin v2 spans as the sidecars export them (`POST /api/v2/spans`, a JSON
//! array) and as Zipkin's query API returns them (`GET /api/v2/traces`, an
//! array of traces, each an array of spans), with the bounded in-memory store
//! behind `meshctl local`'s embedded collector. Shared by the collector and the
//! dashboard's traces view.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// One Zipkin v2 span (the fields the mesh writes and the dashboard shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub trace_id: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Start, microseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Span {
    /// `localEndpoint.serviceName`, or `-`.
    pub fn service(&self) -> &str {
        self.local_endpoint
            .as_ref()
            .and_then(|e| e.service_name.as_deref())
            .unwrap_or("-")
    }
}

/// Why a batch of spans was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("spans must be a JSON array of Zipkin v2 spans: {0}")]
    Json(String),
    #[error("span {index}: traceId {value:?} is not 16 or 32 hex digits")]
    TraceId { index: usize, value: String },
    #[error("span {index}: id {value:?} is not 16 hex digits")]
    Id { index: usize, value: String },
}

fn hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses and checks one POSTed batch; a bad span refuses the whole batch
/// (Zipkin does the same), naming the span and the value.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Span>, SpanError> {
    let spans: Vec<Span> =
        serde_json::from_slice(body).map_err(|e| SpanError::Json(e.to_string()))?;
    for (index, s) in spans.iter().enumerate() {
        if !hex(&s.trace_id, &[16, 32]) {
            return Err(SpanError::TraceId {
                index,
                value: s.trace_id.clone(),
            });
        }
        if !hex(&s.id, &[16]) {
            return Err(SpanError::Id {
                index,
                value: s.id.clone(),
            });
        }
    }
    Ok(spans)
}

/// The last `cap` spans received, oldest dropped first.
#[derive(Debug)]
pub struct Store {
    cap: usize,
    spans: VecDeque<Span>,
    /// Spans received and dropped for room, since start.
    pub received: u64,
    pub evicted: u64,
}

impl Store {
    pub fn new(cap: usize) -> Store {
        Store {
            cap: cap.max(1),
            spans: VecDeque::new(),
            received: 0,
            evicted: 0,
        }
    }

    pub fn add(&mut self, batch: Vec<Span>) {
        for s in batch {
            if self.spans.len() == self.cap {
                self.spans.pop_front();
                self.evicted += 1;
            }
            self.spans.push_back(s);
            self.received += 1;
        }
    }

    /// The `limit` most recent traces (by their latest span start), each
    /// ordered by start time, as Zipkin's `GET /api/v2/traces` answers.
    pub fn traces(&self, limit: usize) -> Vec<Vec<Span>> {
        group(self.spans.iter().cloned(), limit)
    }
}

/// Spans grouped into traces: newest trace first, spans by start within one.
pub fn group(spans: impl IntoIterator<Item = Span>, limit: usize) -> Vec<Vec<Span>> {
    let mut by: HashMap<String, Vec<Span>> = HashMap::new();
    for s in spans {
        by.entry(s.trace_id.clone()).or_default().push(s);
    }
    let mut traces: Vec<Vec<Span>> = by.into_values().collect();
    for t in &mut traces {
        t.sort_by_key(|s| (s.timestamp.unwrap_or(0), s.parent_id.is_some()));
    }
    let latest = |t: &Vec<Span>| t.iter().filter_map(|s| s.timestamp).max().unwrap_or(0);
    traces.sort_by_key(|t| std::cmp::Reverse((latest(t), t[0].trace_id.clone())));
    traces.truncate(limit);
    traces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, id: &str, ts: u64, service: &str) -> Span {
        Span {
            trace_id: trace.into(),
            id: id.into(),
            parent_id: None,
            kind: Some("SERVER".into()),
            name: Some("x".into()),
            timestamp: Some(ts),
            duration: Some(5),
            local_endpoint: Some(Endpoint {
                service_name: Some(service.into()),
                ..Endpoint::default()
            }),
            remote_endpoint: None,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn parses_the_proxys_batch_and_refuses_bad_ids_naming_them() {
        let body = br#"[{"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"a2fb4a1d1a96d312","parentId":"0020000000000001","kind":"CLIENT","name":"echo.default.svc.cluster.local:8080/hello","timestamp":1700000000000000,"duration":1,"localEndpoint":{"serviceName":"client.default","ipv4":"10.88.0.2"},"remoteEndpoint":{"ipv4":"10.88.0.3","port":8080},"tags":{"component":"proxy"}}]"#;
        let got = parse_batch(body).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].service(), "client.default");
        assert_eq!(got[0].remote_endpoint.as_ref().unwrap().port, Some(8080));
        let e = parse_batch(br#"[{"traceId":"xyz","id":"a2fb4a1d1a96d312"}]"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "span 0: traceId \"xyz\" is not 16 or 32 hex digits"
        );
        let e = parse_batch(br#"[{"traceId":"463ac35c9f6413ad","id":"12"}]"#).unwrap_err();
        assert!(e.to_string().contains("id \"12\""), "{e}");
        assert!(matches!(parse_batch(b"{}"), Err(SpanError::Json(_))));
    }

    #[test]
    fn the_store_keeps_the_last_spans_and_groups_them_newest_trace_first() {
        let mut st = Store::new(3);
        st.add(vec![
            span("0000000000000001", "000000000000000a", 10, "a"),
            span("0000000000000002", "000000000000000b", 30, "a"),
            span("0000000000000001", "000000000000000c", 5, "b"),
        ]);
        let t = st.traces(10);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0][0].trace_id, "0000000000000002");
        // Within a trace, by start time.
        let ids: Vec<&str> = t[1].iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["000000000000000c", "000000000000000a"]);
        // A fourth span pushes the oldest out.
        st.add(vec![span("0000000000000003", "000000000000000d", 1, "c")]);
        assert_eq!((st.spans.len(), st.received, st.evicted), (3, 4, 1));
        assert!(st
            .traces(10)
            .iter()
            .flatten()
            .all(|s| s.id != "000000000000000a"));
        assert_eq!(st.traces(1).len(), 1);
    }
}
