//! The compiled form of a VirtualService's routes: what `compile` builds once
//! per snapshot and `eval` reads per request, held apart so that neither of
//! those two depends on the other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_api::networking::{CorsPolicy, HeaderOperations};
use regex::Regex;

/// A compiled string matcher: the one the agent's validator compiles too.
pub use mesh_api::values::Matcher;

/// One compiled `match` entry.
#[derive(Debug, Clone, Default)]
pub struct MatchEntry {
    pub uri: Option<Matcher>,
    pub ignore_uri_case: bool,
    pub scheme: Option<Matcher>,
    pub method: Option<Matcher>,
    pub authority: Option<Matcher>,
    pub headers: Vec<(String, Matcher)>,
    pub without_headers: Vec<(String, Matcher)>,
    pub query: Vec<(String, Matcher)>,
    pub port: Option<u16>,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
    pub gateways: Vec<String>,
}

/// A weighted destination, resolved to a fully qualified host.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
    pub weight: u32,
    pub headers: Option<HeaderOperations>,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    pub abort_http: Option<(u16, f64)>,
    pub abort_grpc: Option<(String, f64)>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: Option<String>,
    /// `namespace/name` of the VirtualService (route_name in logs).
    pub vs: Arc<str>,
    pub matches: Vec<MatchEntry>,
    pub targets: Vec<Target>,
    pub redirect: Option<mesh_api::networking::HttpRedirect>,
    pub direct_response: Option<(u16, String)>,
    pub rewrite: Option<mesh_api::networking::HttpRewrite>,
    pub rewrite_regex: Option<(Regex, String)>,
    pub timeout: Option<Duration>,
    pub retries: Option<Retry>,
    pub fault: Option<Fault>,
    pub mirror: Option<(String, Option<String>, Option<u16>, f64)>,
    pub cors: Option<CorsPolicy>,
    pub cors_origins: Vec<Matcher>,
    /// `corsPolicy.maxAge`, parsed once.
    pub cors_max_age: Option<Duration>,
    pub headers: Option<mesh_api::networking::Headers>,
}

/// A compiled `tcp` or `tls` route.
#[derive(Debug, Clone)]
pub struct L4Route {
    pub ports: Vec<u16>,
    pub subnets: Vec<ipnet::IpNet>,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
    /// `tls` routes: SNI patterns (`*.example.com` allowed); empty for `tcp`.
    pub sni: Vec<String>,
    pub has_match: bool,
    pub targets: Vec<Target>,
}
