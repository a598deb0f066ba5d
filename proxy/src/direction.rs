//! Which way traffic goes through this proxy. Every capture listener, and every
//! connection and request it carries, is either outbound (the app calling out,
//! port 15001) or inbound (a caller reaching the app, port 15006); a gateway's
//! ports carry traffic outbound. Istio's `reporter` metric label is derived from
//! it (`metrics::Reporter`), not the other way round.

/// Which way a connection goes through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Towards the app: the inbound capture listener.
    Inbound,
    /// From the app (or a gateway's callers) out to a service.
    Outbound,
}
