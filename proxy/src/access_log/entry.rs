//! What one HTTP access-log line is made of: what the request's record
//! ([`crate::record`]) knows, and what both the built-in formats and a custom
//! `accessLogFormat` (the `format` module) render.

use std::net::SocketAddr;

pub struct HttpEntry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub code: u16,
    pub flags: &'a str,
    /// `%RESPONSE_CODE_DETAILS%` (`-` when the upstream answered).
    pub details: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub user_agent: &'a str,
    pub request_id: &'a str,
    pub authority: &'a str,
    pub upstream_host: &'a str,
    pub upstream_cluster: &'a str,
    pub downstream_local: SocketAddr,
    pub downstream_remote: SocketAddr,
    /// The downstream peer's verified SPIFFE identity (inbound mTLS), or `unknown`.
    pub peer_principal: &'a str,
    /// `mutual_tls`, `none` or `unknown`, as in the metrics.
    pub security: &'a str,
    /// The request headers the filter reads (`Setting::headers`) that it had.
    pub headers: &'a [(String, String)],
}
