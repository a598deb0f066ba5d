//! A finished span and its Zipkin v2 JSON form (`POST /api/v2/spans`); its
//! OTLP protobuf form is in the `otlp` module.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Kind {
    /// The caller's sidecar (or gateway) sending a request on.
    Client,
    /// The callee's sidecar receiving it.
    Server,
}

/// One span, ready to export.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace: (u64, u64),
    pub id: u64,
    pub parent: Option<u64>,
    pub kind: Kind,
    pub name: String,
    /// Start, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub duration_us: u64,
    /// `<app>.<namespace>`.
    pub service: std::sync::Arc<str>,
    pub local_ip: Option<std::net::IpAddr>,
    pub remote: Option<SocketAddr>,
    pub tags: BTreeMap<&'static str, String>,
    /// Custom tags (names chosen by the mesh config).
    pub custom: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

fn endpoint(
    service: Option<&str>,
    ip: Option<std::net::IpAddr>,
    port: Option<u16>,
) -> Endpoint<'_> {
    Endpoint {
        service_name: service,
        ipv4: ip.filter(|i| i.is_ipv4()).map(|i| i.to_string()),
        ipv6: ip.filter(|i| i.is_ipv6()).map(|i| i.to_string()),
        port,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Zipkin<'a> {
    trace_id: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    kind: Kind,
    name: &'a str,
    timestamp: u64,
    duration: u64,
    local_endpoint: Endpoint<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_endpoint: Option<Endpoint<'a>>,
    tags: BTreeMap<&'a str, &'a str>,
}

impl Span {
    /// The custom tags and the proxy's own (which win on a clash), by name.
    pub fn all_tags(&self) -> BTreeMap<&str, &str> {
        let mut tags: BTreeMap<&str, &str> = self
            .custom
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        tags.extend(self.tags.iter().map(|(k, v)| (*k, v.as_str())));
        tags
    }

    /// The span's duration as exported: Zipkin reads 0 as "unknown", and a
    /// span always took some time.
    pub fn exported_duration_us(&self) -> u64 {
        self.duration_us.max(1)
    }

    fn zipkin(&self) -> Zipkin<'_> {
        let tags = self.all_tags();
        Zipkin {
            trace_id: format!("{:016x}{:016x}", self.trace.0, self.trace.1),
            id: format!("{:016x}", self.id),
            parent_id: self.parent.map(|p| format!("{p:016x}")),
            kind: self.kind,
            name: &self.name,
            timestamp: self.timestamp_us,
            duration: self.exported_duration_us(),
            local_endpoint: endpoint(Some(&self.service), self.local_ip, None),
            remote_endpoint: self
                .remote
                .map(|r| endpoint(None, Some(r.ip()), Some(r.port()))),
            tags,
        }
    }
}

/// A batch as one Zipkin v2 JSON array.
pub fn zipkin_json(spans: &[Span]) -> Vec<u8> {
    let z: Vec<Zipkin<'_>> = spans.iter().map(Span::zipkin).collect();
    serde_json::to_vec(&z).expect("spans serialize")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CLIENT span with a parent, a remote endpoint and a custom tag (the
    /// Zipkin golden file's and the OTLP encoding tests' input).
    pub(crate) fn example() -> Span {
        let mut tags = BTreeMap::new();
        tags.insert("component", "proxy".to_string());
        tags.insert("http.status_code", "200".to_string());
        tags.insert(
            "upstream_cluster",
            "outbound|8080||echo.default.svc.cluster.local".to_string(),
        );
        Span {
            trace: (0x463ac35c9f6413ad, 0x48485a3953bb6124),
            id: 0xa2fb4a1d1a96d312,
            parent: Some(0x0020000000000001),
            kind: Kind::Client,
            name: "echo.default.svc.cluster.local:8080/hello".into(),
            timestamp_us: 1_700_000_000_000_000,
            duration_us: 0,
            service: "client.default".into(),
            local_ip: Some("10.88.0.2".parse().unwrap()),
            remote: Some("10.88.0.3:8080".parse().unwrap()),
            tags,
            custom: [("team".to_string(), "shop".to_string())].into(),
        }
    }

    #[test]
    fn zipkin_json_matches_the_golden_file() {
        let v: serde_json::Value = serde_json::from_slice(&zipkin_json(&[example()])).unwrap();
        let got = serde_json::to_string_pretty(&v).unwrap() + "\n";
        let golden = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/trace/testdata/zipkin_span.json"
        );
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(golden, &got).unwrap();
        }
        let want =
            std::fs::read_to_string(golden).expect("golden file (UPDATE_GOLDEN=1 writes it)");
        assert_eq!(got, want);
    }
}
