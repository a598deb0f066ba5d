//! The body type every proxied request and response uses, at the bottom of
//! the crate so every layer can name it without depending on another.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Why a body could not be read: hyper's error for a downstream body or a
/// pooled hyper connection's, the own HTTP/1 client's ([`crate::h1client`])
/// for a response it decodes itself. Boxed, as hyper takes it.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The body type every proxied request and response uses.
pub type Body = BoxBody<Bytes, BodyError>;

/// A body hyper received (a downstream request's, a hyper connection's
/// response), as a [`Body`].
pub fn from_hyper(b: hyper::body::Incoming) -> Body {
    use http_body_util::BodyExt;
    b.map_err(BodyError::from).boxed()
}
