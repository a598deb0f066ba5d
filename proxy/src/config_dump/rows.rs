//! The row types of `/config_dump`'s `compiled` part and the column helpers
//! both the sidecar's rows (`config_dump`) and a gateway's (`gateway::dump`)
//! use; they sit below both.

use serde::Serialize;

use crate::route::{Matcher, Route};

/// One listener (a port the proxy captures or serves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerRow {
    pub address: String,
    pub port: u16,
    /// Istio's MATCH column: `ALL`, `App: HTTP`, `Trans: raw_buffer; App: TCP`.
    #[serde(rename = "match")]
    pub match_: String,
    /// `Route: host:port`, `Cluster: name`, `PassthroughCluster`, `Inline Route: /path`.
    pub destination: String,
}

/// One cluster (a service port, or a DestinationRule subset of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    pub name: String,
    pub service_fqdn: String,
    pub port: Option<u16>,
    pub subset: String,
    pub direction: String,
    /// `EDS`, `STATIC`, `ORIGINAL_DST`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The DestinationRule in force (its host; the view keys rules by host).
    pub destination_rule: String,
    pub protocol: String,
    pub lb_policy: String,
    pub connection_pool: bool,
    pub outlier_detection: bool,
}

/// One route match of one virtual host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    /// Route config name: the port, as Istio names outbound HTTP route configs.
    pub name: String,
    pub vhost: String,
    pub domains: Vec<String>,
    #[serde(rename = "match")]
    pub match_: String,
    /// `name.namespace` of the VirtualService, empty for the default route.
    pub virtual_service: String,
    /// `cluster (weight)` for each target.
    pub destinations: Vec<String>,
}

/// One endpoint of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRow {
    pub endpoint: String,
    /// `HEALTHY` (ready, serving) or `UNHEALTHY` (not ready in the registry).
    pub status: String,
    /// `OK` or `FAILED` (currently ejected by outlier detection).
    pub outlier_check: String,
    pub cluster: String,
    pub active_requests: usize,
}

/// Everything `meshctl proxy-config` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Compiled {
    pub listeners: Vec<ListenerRow>,
    pub clusters: Vec<ClusterRow>,
    pub routes: Vec<RouteRow>,
    pub endpoints: Vec<EndpointRow>,
    /// A gateway's server certificates (never key bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRow>,
}

/// One server certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRow {
    /// `namespace/secret`, or `file:/path`.
    pub source: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub sans: Vec<String>,
    /// A client CA is part of it (MUTUAL / OPTIONAL_MUTUAL).
    pub has_ca: bool,
    /// Names of the servers presenting it.
    pub servers: Vec<String>,
}

fn matcher(m: &Matcher) -> String {
    match m {
        Matcher::Exact(s) => s.clone(),
        Matcher::Prefix(s) => format!("{s}*"),
        Matcher::Regex(_) => format!("regex {}", m.pattern().unwrap_or_default()),
        Matcher::Present => "*".into(),
    }
}

/// Istio's MATCH column: the path match of each `match` entry (`/*` for none).
pub(crate) fn route_matches(r: &Route) -> Vec<String> {
    if r.matches.is_empty() {
        return vec!["/*".into()];
    }
    r.matches
        .iter()
        .map(|m| {
            let mut s = m.uri.as_ref().map(matcher).unwrap_or_else(|| "/*".into());
            for (h, v) in &m.headers {
                s.push_str(&format!(" [{h}={}]", matcher(v)));
            }
            s
        })
        .collect()
}

pub(crate) fn vs_name(key: &str) -> String {
    match key.split_once('/') {
        Some((ns, name)) => format!("{name}.{ns}"),
        None => key.to_string(),
    }
}
