//! Well-known ports and the proxy's user, identical to Istio's so existing
//! NetworkPolicies, probes and dashboards keep working.

/// Proxy admin endpoint (localhost only): config dump, stats, drain.
pub const ADMIN: u16 = 15000;
/// Outbound capture: the redirect rules send the app's outgoing TCP here.
pub const OUTBOUND_CAPTURE: u16 = 15001;
/// Inbound capture: the redirect rules send incoming TCP here.
pub const INBOUND_CAPTURE: u16 = 15006;
/// HBONE tunnel port: reserved and never captured.
pub const HBONE: u16 = 15008;
/// Config-sync stream and CA of `mesh-agent` (TLS).
pub const AGENT: u16 = 15012;
/// Admission webhook HTTPS port.
pub const WEBHOOK: u16 = 15017;
/// Merged metrics and rewritten application probes.
pub const STATUS: u16 = 15020;
/// `/healthz/ready` of the sidecar.
pub const HEALTH: u16 = 15021;
/// DNS capture (optional).
pub const DNS_CAPTURE: u16 = 15053;
/// Prometheus `/stats/prometheus`.
pub const PROMETHEUS: u16 = 15090;

/// UID the proxy runs as; the redirect rules exempt traffic owned by it.
pub const PROXY_UID: u32 = 1337;
/// GID the proxy runs as.
pub const PROXY_GID: u32 = 1337;

/// Source address the inbound proxy uses towards the app, so its connections are
/// recognisable (and exempt from capture) inside the pod.
pub const INBOUND_PASSTHROUGH_SRC_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 6);
/// IPv6 counterpart of [`INBOUND_PASSTHROUGH_SRC_V4`].
pub const INBOUND_PASSTHROUGH_SRC_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// Every port the sidecar itself owns, for exclusion lists and documentation.
pub const ALL: [u16; 10] = [
    ADMIN,
    OUTBOUND_CAPTURE,
    INBOUND_CAPTURE,
    HBONE,
    AGENT,
    WEBHOOK,
    STATUS,
    HEALTH,
    DNS_CAPTURE,
    PROMETHEUS,
];

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct_and_in_istio_range() {
        let mut ports = super::ALL.to_vec();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), super::ALL.len());
        assert!(ports.iter().all(|p| (15000..15100).contains(p)));
    }
}
