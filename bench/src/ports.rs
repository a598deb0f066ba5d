//! The ports and host names the bench's pods and proxies agree on: the app's
//! ports and service host, and the ports the gateway pod binds. A leaf, so
//! the Envoy config writer, the topology and the gateway variants all read it
//! without depending on each other.

/// The bench service's host (its cluster IP is [`crate::topology::VIP`]).
pub const HOST: &str = "bench.default.svc.cluster.local";

/// App ports: HTTP/1.1, HTTP/2 (h2c), TCP echo.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub h2: u16,
    pub tcp: u16,
}

pub const PORTS: Ports = Ports {
    http: 8080,
    h2: 8081,
    tcp: 9000,
};

/// Ports the gateway pod binds: the targetPorts of Istio's ingress gateway
/// Service (80 → 8080, 443 → 8443).
#[derive(Debug, Clone, Copy)]
pub struct GatewayPorts {
    pub http: u16,
    pub https: u16,
}

pub const GATEWAY_PORTS: GatewayPorts = GatewayPorts {
    http: 8080,
    https: 8443,
};
