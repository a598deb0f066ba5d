//! The pure rule builder: [`RedirectParams`] in, the capture rule set out, rendered as
//! `iptables-restore` input. Produces the same chains and rules as Istio's
//! `istio-iptables` (checked against its golden files by `tests/conformance.rs`).
//!
//! Rules are kept per family, per table, per chain in their final order: Istio's
//! `-I CHAIN 1` insertions are resolved while building, so the rendering only needs
//! `-A`, which is what makes the apply step simple and idempotent.

use std::net::IpAddr;

use mesh_api::RedirectParams;

pub use model::{Family, FamilyRules, Rule, RuleSet, TableRules, BUILTIN_CHAINS, TABLES};

mod builder;
mod dns;
mod istio;
mod model;
mod tproxy;

/// Builds the rule set Istio's `istio-iptables` writes for these parameters.
pub fn build(p: &RedirectParams) -> RuleSet {
    RuleSet {
        v4: istio::build_family(p, Family::V4),
        v6: p.enable_ipv6.then(|| istio::build_family(p, Family::V6)),
    }
}

/// The address families a pod's IPs need rules for.
pub fn wants_ipv6(ips: &[IpAddr]) -> bool {
    ips.iter().any(IpAddr::is_ipv6)
}
