//! backendRefs: which Service (host, port) a reference names, or why it names
//! none (InvalidKind, RefNotPermitted without a ReferenceGrant, BackendNotFound),
//! and Gateway API weights as Istio percentages.

use super::ctx::Ctx;
use mesh_api::gatewayapi::{self as gw, reason, BackendRef, RefFrom, RefTo};
use serde_json::{json, Value};

/// A resolved backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub host: String,
    pub port: Option<i32>,
    pub weight: i32,
    /// Per-backend header operations (VS destination `headers`).
    pub headers: Option<Value>,
}

/// Resolves backendRef `b` (at field `path`) of a `route_kind` in `route_ns`.
pub fn backend(
    ctx: &Ctx<'_>,
    route_kind: &str,
    route_ns: &str,
    b: &BackendRef,
    path: &str,
) -> Result<Backend, (&'static str, String)> {
    if !b.is_service() {
        return Err((
            reason::INVALID_KIND,
            format!(
                "{path}: unsupported backend kind {:?} (group {:?})",
                b.kind, b.group
            ),
        ));
    }
    let ns = b.namespace.clone().unwrap_or_else(|| route_ns.to_string());
    if !gw::permits(
        &ctx.grants,
        RefFrom {
            group: gw::GROUP,
            kind: route_kind,
            namespace: route_ns,
        },
        RefTo {
            group: "",
            kind: "Service",
            namespace: &ns,
            name: &b.name,
        },
    ) {
        return Err((
            reason::REF_NOT_PERMITTED,
            format!(
                "{path}: Service {ns}/{} in another namespace needs a ReferenceGrant",
                b.name
            ),
        ));
    }
    if ctx.service(&ns, &b.name).is_none() {
        return Err((
            reason::BACKEND_NOT_FOUND,
            format!("{path}: Service {ns}/{} not found", b.name),
        ));
    }
    Ok(Backend {
        host: ctx.service_host(&ns, &b.name),
        port: b.port,
        weight: b.weight,
        headers: None,
    })
}

/// Istio destinations for weighted backends: weight-0 backends dropped, the
/// rest scaled to percentages summing to 100 (largest remainder). Empty when no
/// backend carries weight.
pub fn destinations(backends: &[Backend]) -> Vec<Value> {
    let live: Vec<&Backend> = backends.iter().filter(|b| b.weight > 0).collect();
    let total: i64 = live.iter().map(|b| i64::from(b.weight)).sum();
    let mut pct: Vec<i64> = live
        .iter()
        .map(|b| i64::from(b.weight) * 100 / total.max(1))
        .collect();
    let mut rest: Vec<(i64, usize)> = live
        .iter()
        .enumerate()
        .map(|(i, b)| (-(i64::from(b.weight) * 100 % total.max(1)), i))
        .collect();
    rest.sort();
    let missing = 100 - pct.iter().sum::<i64>();
    for (_, i) in rest.iter().take(usize::try_from(missing).unwrap_or(0)) {
        pct[*i] += 1;
    }
    live.iter()
        .zip(pct)
        .map(|(b, p)| {
            let mut d = json!({"destination": {"host": b.host}});
            if let Some(port) = b.port {
                d["destination"]["port"] = json!({"number": port});
            }
            if live.len() > 1 {
                d["weight"] = json!(p);
            }
            if let Some(h) = &b.headers {
                d["headers"] = h.clone();
            }
            d
        })
        .collect()
}
