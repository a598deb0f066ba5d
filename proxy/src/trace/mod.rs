//! Distributed tracing as Istio's Envoy does it: the caller's sidecar (or the
//! gateway) makes a CLIENT span, the callee's sidecar a SERVER span that is its
//! child; context travels as B3 and W3C `traceparent` ([`context`]); the
//! sampling decision follows [`sample`]; finished spans ([`span`]) are exported
//! in the background ([`export`]) as Zipkin JSON or OTLP ([`otlp`], written by
//! [`proto`]); [`request`] starts and finishes the span of one request. With no `tracing` in the view nothing happens; an unsampled
//! request only gets its context headers.

pub mod context;
pub mod export;
pub mod otlp;
pub mod proto;
pub mod request;
pub mod sample;
pub mod span;

pub use export::Tracer;
