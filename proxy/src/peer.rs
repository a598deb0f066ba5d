//! Peer metadata exchange: the outbound proxy tells the inbound proxy who is
//! calling (and the inbound proxy answers with who was called) in one header,
//! so both sides report `source_*` and `destination_*` metric labels, as
//! Istio's metadata exchange does. The header never reaches the apps.

use std::sync::Arc;

use crate::metrics::Workload;

pub const HEADER: &str = "x-mesh-peer-metadata";

/// `workload=..;namespace=..;principal=..;app=..;version=..;service=..;revision=..`
pub fn encode(w: &Workload) -> http::HeaderValue {
    let clean = |s: &str| s.replace([';', '=', '\r', '\n'], "_");
    let v = format!(
        "workload={};namespace={};principal={};app={};version={};service={};revision={}",
        clean(&w.workload),
        clean(&w.namespace),
        clean(&w.principal),
        clean(&w.app),
        clean(&w.version),
        clean(&w.canonical_service),
        clean(&w.canonical_revision)
    );
    http::HeaderValue::from_str(&v)
        .unwrap_or_else(|_| http::HeaderValue::from_static("workload=unknown"))
}

/// Parses a peer header; unknown fields are ignored, missing ones are `unknown`.
pub fn decode(v: &http::HeaderValue) -> Arc<Workload> {
    let mut w = (*Workload::unknown()).clone();
    if let Ok(s) = v.to_str() {
        for (k, val) in s.split(';').filter_map(|kv| kv.split_once('=')) {
            let val: Arc<str> = Arc::from(val);
            match k {
                "workload" => w.workload = val,
                "namespace" => w.namespace = val,
                "principal" => w.principal = val,
                "app" => w.app = val,
                "version" => w.version = val,
                "service" => w.canonical_service = val,
                "revision" => w.canonical_revision = val,
                _ => {}
            }
        }
    }
    Arc::new(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = (*Workload::unknown()).clone();
        w.workload = Arc::from("reviews-v1");
        w.version = Arc::from("v1;x=y");
        let back = decode(&encode(&w));
        assert_eq!(&*back.workload, "reviews-v1");
        assert_eq!(&*back.version, "v1_x_y");
        assert_eq!(&*back.namespace, "unknown");
    }
}
