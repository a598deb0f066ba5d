//! The body type every proxied request and response uses, at the bottom of
//! the crate so every layer can name it without depending on another.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// The body type every proxied request and response uses.
pub type Body = BoxBody<Bytes, hyper::Error>;
