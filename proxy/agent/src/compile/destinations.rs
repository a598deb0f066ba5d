//! Host patterns ([`host_matches`]) and the index of VirtualService
//! destinations ([`VsDestinations`]). Its own file because a snapshot holds
//! the index while the cross-resource checks (`cross.rs`) read snapshots.

use std::collections::HashMap;

/// Does a host pattern (`*`, `*.suffix` or exact) match `host`?
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

/// VirtualService destinations ([`super::Snapshot::vs_destinations`]): exact
/// hosts by name, so asking which namespaces route to one host is a lookup
/// and a walk over the wildcard patterns, not over every destination.
#[derive(Debug, Default)]
pub struct VsDestinations {
    exact: HashMap<String, Vec<String>>,
    patterns: Vec<(String, String)>,
}

impl VsDestinations {
    /// A destination (an FQDN or a wildcard) of a VirtualService of `ns`.
    pub fn add(&mut self, destination: String, ns: String) {
        if destination.starts_with('*') {
            self.patterns.push((destination, ns));
        } else {
            self.exact.entry(destination).or_default().push(ns);
        }
    }

    /// The namespaces of the VirtualServices with a destination that
    /// matches `host` (repeated when several do).
    pub fn namespaces_routing_to<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a String> {
        let exact = self.exact.get(host).into_iter().flatten();
        let patterns = self
            .patterns
            .iter()
            .filter(move |(d, _)| host_matches(d, host))
            .map(|(_, ns)| ns);
        exact.chain(patterns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vs_destinations_answer_exact_hosts_and_wildcards() {
        let mut d = VsDestinations::default();
        d.add("api.shop.svc.cluster.local".into(), "front".into());
        d.add("api.shop.svc.cluster.local".into(), "shop".into());
        d.add("*.shop.svc.cluster.local".into(), "edge".into());
        d.add("db.bank.svc.cluster.local".into(), "bank".into());
        let of = |h| d.namespaces_routing_to(h).cloned().collect::<Vec<_>>();
        assert_eq!(of("api.shop.svc.cluster.local"), ["front", "shop", "edge"]);
        assert_eq!(of("web.shop.svc.cluster.local"), ["edge"]);
        assert_eq!(of("shop.svc.cluster.local"), Vec::<String>::new());
        assert_eq!(of("db.bank.svc.cluster.local"), ["bank"]);
    }
}
