//! Checks of the destinations a route sends to, shared by HTTP, TLS and TCP
//! routes (and HTTP mirrors): host, subset and port of each, and Istio's
//! rules for weights. A leaf of `networking`: it uses no sibling file, so
//! every route file can use it.

use crate::validate::checks::*;
use crate::validate::report::Report;
use mesh_api::networking::*;

/// One destination: a concrete host (no wildcard), a DNS-1123 subset, a valid
/// port.
pub fn destination(r: &mut Report<'_>, p: &str, d: &Destination) {
    host(r, &format!("{p}.host"), &d.host, false);
    if let Some(sub) = &d.subset {
        if !dns1123_subdomain_like(sub) {
            r.error(format!("{p}.subset"), sub, "subset must be a DNS-1123 name");
        }
    }
    if let Some(n) = d.port.as_ref().and_then(|p| p.number) {
        port(r, &format!("{p}.port.number"), n);
    }
}

/// Destinations of one route: each valid, weights non-negative and summing to 100
/// when there is more than one destination (Istio's rule for weighted routes).
pub fn route_destinations<'d>(
    r: &mut Report<'_>,
    p: &str,
    dests: impl Iterator<Item = (&'d Destination, Option<i32>)>,
) {
    let dests: Vec<_> = dests.collect();
    let mut sum: i64 = 0;
    for (j, (d, w)) in dests.iter().enumerate() {
        destination(r, &format!("{p}.route[{j}].destination"), d);
        if let Some(w) = w {
            if *w < 0 {
                r.error(
                    format!("{p}.route[{j}].weight"),
                    w,
                    "weight must not be negative",
                );
            }
            sum += i64::from(*w);
        }
    }
    let any_weight = dests.iter().any(|(_, w)| w.is_some());
    if dests.len() > 1 && any_weight && sum != 100 {
        r.error(
            format!("{p}.route"),
            sum,
            "total destination weight must be 100",
        );
    }
    if dests.len() == 1 && any_weight && sum != 100 && sum != 0 {
        r.error(
            format!("{p}.route[0].weight"),
            sum,
            "a single destination's weight must be 100 or unset",
        );
    }
}
