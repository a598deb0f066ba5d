//! Gateway checks, with Istio's codes and wording:
//! - a Gateway whose `selector` matches no pod: IST0101 `Referenced selector
//!   not found: "istio=ingressgateway"` (Istio's gateway analyzer);
//! - a `credentialName` with no Secret in the namespace of the gateway pods
//!   it selects: IST0101 `Referenced credentialName not found: "NAME"`
//!   (Istio's gateway secret analyzer; only checked once the selector matches);
//! - servers of different Gateways that select the same workload, on the same
//!   port, with overlapping hosts: IST0145 ConflictingGateways.
//!
//! Gateway pods are the input's workloads plus the gateways of the default
//! install (`--installed-gateways`), which files analyzed offline rarely carry.

use std::collections::{BTreeMap, BTreeSet};

use mesh_agent::compile::Snapshot;
use mesh_agent::objects::KubeObject;
use mesh_agent::store::Store;
use mesh_api::networking::Server;

use super::checks::{Level, Message};
use super::workloads::Workload;

type Labels = BTreeMap<String, String>;

fn selects(selector: &Labels, w: &Workload) -> bool {
    selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
}

/// `k=v,k2=v2`, as Kubernetes prints a label selector.
fn selector_text(selector: &Labels) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A server host without its `namespace/` part.
fn bare(host: &str) -> &str {
    host.split_once('/').map_or(host, |(_, h)| h)
}

/// Whether two server hosts can both match one request host (`*`, left-most
/// wildcards, exact names), as Istio's conflict check compares them.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (bare(a), bare(b));
    if a == "*" || b == "*" || a.eq_ignore_ascii_case(b) {
        return true;
    }
    let covers = |wild: &str, other: &str| {
        wild.strip_prefix('*').is_some_and(|suffix| {
            let other = other.strip_prefix('*').unwrap_or(other);
            other
                .to_ascii_lowercase()
                .ends_with(&suffix.to_ascii_lowercase())
        })
    };
    covers(a, b) || covers(b, a)
}

fn port_of(s: &Server) -> Option<u32> {
    s.port.as_ref().map(|p| p.number)
}

/// Secrets of the input, as `namespace/name`.
fn secrets(store: &Store) -> BTreeSet<String> {
    store
        .objects
        .iter()
        .filter(|(_, e)| matches!(&*e.object, KubeObject::Secret(_)))
        .map(|(k, _)| format!("{}/{}", k.namespace, k.name))
        .collect()
}

pub fn run(store: &Store, snap: &Snapshot, pods: &[Workload], out: &mut Vec<Message>) {
    let secrets = secrets(store);
    // Gateway key -> the pods it selects.
    let mut selected: BTreeMap<String, Vec<&Workload>> = BTreeMap::new();
    for g in snap.gateways.iter() {
        // Translated from a Gateway API Gateway: its pods come from the
        // auto-deployment, and its problems are reported in that Gateway's status.
        if mesh_agent::gatewayapi::is_generated(&g.key) {
            continue;
        }
        let spec = g.gateway();
        let me = format!("Gateway {}/{}", g.key.namespace, g.key.name);
        let matched: Vec<&Workload> = pods.iter().filter(|w| selects(&spec.selector, w)).collect();
        let Some(first) = matched.first() else {
            out.push(Message {
                level: Level::Error,
                code: "IST0101",
                name: "ReferencedResourceNotFound",
                resource: me,
                text: format!(
                    "Referenced selector not found: {:?}",
                    selector_text(&spec.selector)
                ),
                hint:
                    "deploy a gateway whose pods carry these labels (istio: ingressgateway for the \
                       default ingress) or fix spec.selector"
                        .into(),
            });
            continue;
        };
        // Credentials are read from the gateway pods' namespace (Istio assumes one).
        let gw_ns = &first.namespace;
        for (i, s) in spec.servers.iter().enumerate() {
            let Some(cn) = s.tls.as_ref().and_then(|t| t.credential_name.as_deref()) else {
                continue;
            };
            if cn.is_empty() || secrets.contains(&format!("{gw_ns}/{cn}")) {
                continue;
            }
            out.push(Message {
                level: Level::Error,
                code: "IST0101",
                name: "ReferencedResourceNotFound",
                resource: me.clone(),
                text: format!("Referenced credentialName not found: {cn:?}"),
                hint: format!(
                    "create it in the gateway pods' namespace {gw_ns} (kubectl create -n {gw_ns} \
                     secret tls {cn} --cert=... --key=...), or fix spec.servers[{i}].tls.credentialName"
                ),
            });
        }
        selected.insert(format!("{}/{}", g.key.namespace, g.key.name), matched);
    }
    conflicts(snap, &selected, out);
}

/// IST0145: for each pair of Gateways sharing a selected pod, servers on the
/// same port with overlapping hosts.
fn conflicts(snap: &Snapshot, selected: &BTreeMap<String, Vec<&Workload>>, out: &mut Vec<Message>) {
    let name = |g: &mesh_agent::compile::Accepted| format!("{}/{}", g.key.namespace, g.key.name);
    for a in snap.gateways.iter() {
        let ka = name(a);
        let Some(pods_a) = selected.get(&ka) else {
            continue;
        };
        // (port, this gateway's overlapping hosts) -> the other gateways.
        let mut found: BTreeMap<(u32, BTreeSet<String>), BTreeSet<String>> = BTreeMap::new();
        for b in snap.gateways.iter() {
            let kb = name(b);
            if kb == ka {
                continue;
            }
            let Some(pods_b) = selected.get(&kb) else {
                continue;
            };
            if !pods_a.iter().any(|p| pods_b.contains(p)) {
                continue;
            }
            for sa in &a.gateway().servers {
                for sb in &b.gateway().servers {
                    let (Some(pa), Some(pb)) = (port_of(sa), port_of(sb)) else {
                        continue;
                    };
                    if pa != pb {
                        continue;
                    }
                    let hosts: BTreeSet<String> = sa
                        .hosts
                        .iter()
                        .filter(|ha| sb.hosts.iter().any(|hb| hosts_overlap(ha, hb)))
                        .map(|h| bare(h).to_string())
                        .collect();
                    if !hosts.is_empty() {
                        found.entry((pa, hosts)).or_default().insert(kb.clone());
                    }
                }
            }
        }
        for ((port, hosts), others) in found {
            out.push(Message {
                level: Level::Error,
                code: "IST0145",
                name: "ConflictingGateways",
                resource: format!("Gateway {ka}"),
                text: format!(
                    "Conflict with gateways {} (workload selector {}, port {port}, hosts {}).",
                    others.into_iter().collect::<Vec<_>>().join(","),
                    selector_text(&a.gateway().selector),
                    hosts.into_iter().collect::<Vec<_>>().join(",")
                ),
                hint: "put these hosts in one Gateway, make the hosts distinct, or use another \
                       port or gateway workload for one of them"
                    .into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_overlap_like_istio() {
        for (a, b, want) in [
            ("*", "foo.example.com", true),
            ("foo.example.com", "*.example.com", true),
            ("*.example.com", "*.example.com", true),
            ("*.example.com", "*.foo.example.com", true),
            ("ns/foo.example.com", "./FOO.example.com", true),
            ("foo.example.com", "bar.example.com", false),
            ("*.example.com", "example.com", false),
            ("*.example.com", "*.example.org", false),
        ] {
            assert_eq!(hosts_overlap(a, b), want, "{a} vs {b}");
            assert_eq!(hosts_overlap(b, a), want, "{b} vs {a}");
        }
    }
}
