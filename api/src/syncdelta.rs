//! Incremental pushes: what changed between two views of one proxy, as
//! per-service upserts and removals, and the view rebuilt from the previous
//! one plus that change.
//!
//! Most changes in a large mesh are endpoint churn of one service; sending
//! the whole view for each costs bytes proportional to the view. A
//! [`ViewDelta`] carries only the services that differ. Anything else that
//! changed (routes, policies, gateway, telemetry settings) makes [`diff`]
//! answer `None` and the agent sends the full view instead: those parts are
//! small and rarely change, and one rule keeps both ends simple.
//!
//! The stream is ordered, so the proxy applies a delta to the last view it
//! received (applied or rejected alike: the agent cannot know which); `base`
//! names that view's version as a check, and a mismatch ends the stream so
//! the reconnect starts again from a full view.

use crate::syncview::{ProxyView, Service};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The services that changed from the view at `base` to the view at `version`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ViewDelta {
    /// Version of the view this applies to (the last one sent on the stream).
    pub base: u64,
    /// Version of the view it makes.
    pub version: u64,
    /// Services new or changed, whole, sorted by hostname.
    pub upsert: Vec<Arc<Service>>,
    /// Hostnames no longer in the view.
    pub remove: Vec<String>,
}

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("delta for version {version} applies to version {base}, but the last view received is {have}")]
    WrongBase { base: u64, version: u64, have: u64 },
    #[error("delta for version {version} arrived before any full view")]
    NoBase { version: u64 },
    #[error("delta for version {version} removes {host:?}, which the view does not have")]
    UnknownRemoval { version: u64, host: String },
}

/// What differs from `old` to `new`, when only services differ and the
/// change is smaller than the view; `None` means: send `new` whole.
pub fn diff(old: &ProxyView, new: &ProxyView) -> Option<ViewDelta> {
    if !same_apart_from_services(old, new)
        || !unique_hosts(&old.services)
        || !unique_hosts(&new.services)
    {
        return None;
    }
    let before: BTreeMap<&str, &Arc<Service>> = old
        .services
        .iter()
        .map(|s| (s.hostname.as_str(), s))
        .collect();
    let after: HashSet<&str> = new.services.iter().map(|s| s.hostname.as_str()).collect();
    // Shared services are compared by address first: most are the same.
    let upsert: Vec<Arc<Service>> = new
        .services
        .iter()
        .filter(|s| {
            before
                .get(s.hostname.as_str())
                .is_none_or(|o| !Arc::ptr_eq(o, s) && o != s)
        })
        .cloned()
        .collect();
    let remove: Vec<String> = before
        .keys()
        .filter(|h| !after.contains(*h))
        .map(|h| h.to_string())
        .collect();
    // Past half the view a delta saves little and costs the proxy a merge.
    if (upsert.len() + remove.len()) * 2 > new.services.len().max(1) {
        return None;
    }
    Some(ViewDelta {
        base: old.version,
        version: new.version,
        upsert,
        remove,
    })
}

/// `base` with `delta` applied: the view the agent had when it sent it.
pub fn apply(base: &ProxyView, delta: &ViewDelta) -> Result<ProxyView, DeltaError> {
    if base.version != delta.base {
        return Err(DeltaError::WrongBase {
            base: delta.base,
            version: delta.version,
            have: base.version,
        });
    }
    let mut services: BTreeMap<&str, &Arc<Service>> = base
        .services
        .iter()
        .map(|s| (s.hostname.as_str(), s))
        .collect();
    for host in &delta.remove {
        if services.remove(host.as_str()).is_none() {
            return Err(DeltaError::UnknownRemoval {
                version: delta.version,
                host: host.clone(),
            });
        }
    }
    for s in &delta.upsert {
        services.insert(s.hostname.as_str(), s);
    }
    let services = services.into_values().cloned().collect();
    Ok(ProxyView {
        version: delta.version,
        services,
        ..without_services(base)
    })
}

/// Everything but the services, cloned (the version kept).
fn without_services(v: &ProxyView) -> ProxyView {
    ProxyView {
        version: v.version,
        services: Vec::new(),
        virtual_services: v.virtual_services.clone(),
        destination_rules: v.destination_rules.clone(),
        outbound_traffic_policy: v.outbound_traffic_policy.clone(),
        inbound: v.inbound.clone(),
        gateway: v.gateway.clone(),
        tracing: v.tracing.clone(),
        access_log: v.access_log.clone(),
        on_demand: v.on_demand,
    }
}

/// Whether every part of the views other than version and services is equal.
fn same_apart_from_services(a: &ProxyView, b: &ProxyView) -> bool {
    // Destructured in full so a new field cannot be forgotten here.
    let ProxyView {
        version: _,
        services: _,
        virtual_services,
        destination_rules,
        outbound_traffic_policy,
        inbound,
        gateway,
        tracing,
        access_log,
        on_demand,
    } = a;
    *virtual_services == b.virtual_services
        && *destination_rules == b.destination_rules
        && *outbound_traffic_policy == b.outbound_traffic_policy
        && *inbound == b.inbound
        && *gateway == b.gateway
        && *tracing == b.tracing
        && *access_log == b.access_log
        && *on_demand == b.on_demand
}

fn unique_hosts(services: &[Arc<Service>]) -> bool {
    let mut seen = HashSet::new();
    services.iter().all(|s| seen.insert(s.hostname.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncview::Endpoint;

    fn svc(name: &str, ips: &[&str]) -> Arc<Service> {
        Arc::new(Service {
            hostname: format!("{name}.default.svc.cluster.local"),
            namespace: "default".into(),
            endpoints: ips
                .iter()
                .map(|ip| Endpoint {
                    address: ip.to_string(),
                    ready: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn view(version: u64, services: Vec<Arc<Service>>) -> ProxyView {
        ProxyView {
            version,
            services,
            outbound_traffic_policy: "ALLOW_ANY".into(),
            ..Default::default()
        }
    }

    fn many(n: usize) -> Vec<Arc<Service>> {
        (0..n)
            .map(|i| svc(&format!("s{i:02}"), &["10.0.0.1"]))
            .collect()
    }

    #[test]
    fn one_endpoint_change_is_one_service() {
        let old = view(1, many(10));
        let mut next = many(10);
        Arc::make_mut(&mut next[3]).endpoints.push(Endpoint {
            address: "10.0.0.9".into(),
            ..Default::default()
        });
        let new = view(2, next);
        let d = diff(&old, &new).unwrap();
        assert_eq!((d.base, d.version), (1, 2));
        assert_eq!(d.upsert, vec![new.services[3].clone()]);
        assert!(d.remove.is_empty());
        assert_eq!(apply(&old, &d).unwrap(), new);
    }

    #[test]
    fn added_and_removed_services_keep_the_order() {
        let old = view(4, many(10));
        let mut next = many(10);
        next.remove(7);
        next.push(svc("s05a", &["10.0.0.2"]));
        next.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        let new = view(5, next);
        let d = diff(&old, &new).unwrap();
        assert_eq!(d.remove, ["s07.default.svc.cluster.local"]);
        assert_eq!(d.upsert.len(), 1);
        assert_eq!(apply(&old, &d).unwrap(), new);
    }

    #[test]
    fn same_version_other_services_is_a_delta_too() {
        // An on-demand lookup adds a host at the same mesh version.
        let old = view(9, many(4));
        let mut next = many(4);
        next.push(svc("z", &["10.0.0.3"]));
        let new = view(9, next);
        let d = diff(&old, &new).unwrap();
        assert_eq!((d.base, d.version), (9, 9));
        assert_eq!(apply(&old, &d).unwrap(), new);
    }

    #[test]
    fn anything_but_services_sends_the_whole_view() {
        let old = view(1, many(10));
        let mut new = view(2, many(10));
        new.outbound_traffic_policy = "REGISTRY_ONLY".into();
        assert_eq!(diff(&old, &new), None);
        let mut new = view(2, many(10));
        new.on_demand = true;
        assert_eq!(diff(&old, &new), None);
    }

    #[test]
    fn big_changes_send_the_whole_view() {
        let old = view(1, many(4));
        let new = view(
            2,
            (0..4)
                .map(|i| svc(&format!("s{i:02}"), &["10.9.9.9"]))
                .collect(),
        );
        assert_eq!(diff(&old, &new), None);
    }

    #[test]
    fn duplicate_hosts_send_the_whole_view() {
        let old = view(1, many(10));
        let mut next = many(10);
        next.push(next[0].clone());
        assert_eq!(diff(&old, &view(2, next)), None);
    }

    #[test]
    fn a_delta_on_another_base_is_refused() {
        let old = view(1, many(10));
        let mut next = many(10);
        Arc::make_mut(&mut next[0]).endpoints.clear();
        let d = diff(&old, &view(2, next)).unwrap();
        let e = apply(&view(3, many(10)), &d).unwrap_err();
        assert_eq!(
            e.to_string(),
            "delta for version 2 applies to version 1, but the last view received is 3"
        );
        let bad = ViewDelta {
            base: 1,
            version: 2,
            remove: vec!["nope".into()],
            upsert: vec![],
        };
        assert_eq!(
            apply(&old, &bad).unwrap_err().to_string(),
            "delta for version 2 removes \"nope\", which the view does not have"
        );
    }
}
