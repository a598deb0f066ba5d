//! Generated VirtualServices: http/tls/tcp routes collected per (namespace,
//! binding, host, exportTo), emitted as one VirtualService each with http routes
//! in Gateway API precedence order.

use super::attach::Attachment;
use super::ctx::Ctx;
use super::rules::SortKey;
use super::translated::{istio_object, name_part, Translated, GENERATED_SUFFIX};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Generated VirtualServices, grouped by (namespace, binding, host, exportTo).
#[derive(Default)]
pub struct VsBuilder {
    groups: BTreeMap<(String, String, String, Vec<String>), Group>,
}

#[derive(Default)]
pub(super) struct Group {
    pub(super) http: Vec<(SortKey, Value)>,
    tls: Vec<Value>,
    tcp: Vec<Value>,
    parents: BTreeSet<String>,
}

impl VsBuilder {
    pub(super) fn group(
        &mut self,
        ns: &str,
        a: &Attachment,
        host: &str,
        parent: &str,
    ) -> &mut Group {
        let g = self
            .groups
            .entry((
                ns.into(),
                a.binding.clone(),
                host.into(),
                a.export_to.clone(),
            ))
            .or_default();
        g.parents.insert(parent.into());
        g
    }

    pub fn add_tls(&mut self, ns: &str, a: &Attachment, parent: &str, route: Value) {
        let host = a.hosts.join(",");
        self.group(ns, a, &host, parent).tls.push(route);
    }

    /// TCP routes: `*` on a gateway listener, the Service's host for a mesh parent.
    pub fn add_tcp(&mut self, ns: &str, a: &Attachment, parent: &str, route: Value) {
        let host = a.hosts.join(",");
        self.group(ns, a, &host, parent).tcp.push(route);
    }

    /// Emits one VirtualService per group, http routes in precedence order.
    pub fn finish(self, _ctx: &Ctx<'_>, out: &mut Translated) {
        for ((ns, binding, host, export_to), mut g) in self.groups {
            g.http.sort_by(|a, b| a.0.cmp(&b.0));
            // Dots separate the parts: each stays a DNS label, the whole a subdomain.
            let bind_label = match binding.split_once('/') {
                None => binding.clone(),
                Some((gns, gname)) => {
                    let gname = gname
                        .strip_suffix(&format!("-{GENERATED_SUFFIX}"))
                        .or_else(|| gname.strip_suffix(&format!(".{GENERATED_SUFFIX}")))
                        .unwrap_or(gname);
                    if gns == ns {
                        gname.to_string()
                    } else {
                        format!("{gns}.{gname}")
                    }
                }
            };
            let local = if export_to.is_empty() {
                ""
            } else {
                ".consumer"
            };
            let name = format!(
                "{}.{}{local}.{GENERATED_SUFFIX}",
                name_part(&host.replace(',', ".")),
                name_part(&bind_label)
            );
            let hosts: Vec<&str> = host.split(',').collect();
            let mut spec = json!({"hosts": hosts, "gateways": [binding]});
            if !export_to.is_empty() {
                spec["exportTo"] = json!(export_to);
            }
            if !g.http.is_empty() {
                spec["http"] = Value::Array(g.http.into_iter().map(|x| x.1).collect());
            }
            if !g.tls.is_empty() {
                spec["tls"] = Value::Array(g.tls);
            }
            if !g.tcp.is_empty() {
                spec["tcp"] = Value::Array(g.tcp);
            }
            let parents: Vec<String> = g.parents.into_iter().collect();
            istio_object("VirtualService", &ns, &name, &parents, spec, out);
        }
    }
}
