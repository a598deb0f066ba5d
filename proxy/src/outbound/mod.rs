//! Outbound: connections the app makes to services (the outbound capture
//! listener, 15001), and the gateway's traffic, which takes the same path.
//! HTTP requests ([`http`]) are matched to their service and its
//! VirtualService route ([`route`]), then sent on with the route's timeout and
//! retries ([`forward`], [`send`]); other connections are carried as TCP
//! ([`tcp`]). Which path a connection takes is decided by the listener
//! (`server`, above).

pub mod forward;
pub mod http;
pub mod ondemand;
pub mod route;
pub mod send;
pub mod tcp;
