//! Inbound: connections from callers to this workload's app (the inbound
//! capture listener, 15006). A sidecar's mTLS is terminated first ([`tls`]);
//! every request or TCP connection then passes the policy gate ([`gate`]:
//! path normalization, AuthorizationPolicy, local rate limit) and is carried
//! to the local app as HTTP ([`http`]) or opaque TCP ([`tcp`]). Which path a
//! connection takes is decided by the listener (`server`, above).

pub mod gate;
pub mod http;
pub mod tcp;
pub mod tls;
