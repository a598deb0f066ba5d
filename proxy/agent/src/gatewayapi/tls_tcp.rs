//! TLSRoute → VirtualService `tls` routes matching the SNI hosts (route hostnames
//! ∩ listener hostname) on a Passthrough listener; TCPRoute → `tcp` routes.
//! Backends resolve as for HTTP routes; with no usable backend the rule is left
//! out (the connection is refused) and ResolvedRefs says why.

use super::attach::{self, Parent};
use super::ctx::{gateway_api, Ctx};
use super::gateways::Gateways;
use super::refs::{self, Backend};
use super::status::{route_status, ParentResult};
use super::translated::Translated;
use super::vsbuild::VsBuilder;
use mesh_api::gatewayapi::tlsroute::StreamRouteRule;
use mesh_api::gatewayapi::GatewayApiResource;
use serde_json::json;

/// Translates every TLSRoute and TCPRoute.
pub fn translate_routes(
    ctx: &Ctx<'_>,
    gws: &mut Gateways,
    vs: &mut VsBuilder,
    out: &mut Translated,
) {
    for (key, r) in gateway_api(ctx.store) {
        let (parents, hostnames, rules): (_, &[String], &Vec<StreamRouteRule>) = match r {
            GatewayApiResource::TLSRoute(x) => {
                (&x.spec.parent_refs, &x.spec.hostnames, &x.spec.rules)
            }
            GatewayApiResource::TCPRoute(x) => (&x.spec.parent_refs, &[], &x.spec.rules),
            _ => continue,
        };
        let kind = r.kind();
        let ns = &key.namespace;
        let mut unresolved = None;
        let mut per_rule: Vec<Vec<serde_json::Value>> = Vec::new();
        for (ri, rule) in rules.iter().enumerate() {
            let mut backends: Vec<Backend> = Vec::new();
            for (bi, b) in rule.backend_refs.iter().enumerate() {
                match refs::backend(
                    ctx,
                    kind,
                    ns,
                    b,
                    &format!("spec.rules[{ri}].backendRefs[{bi}]"),
                ) {
                    Ok(be) => backends.push(be),
                    Err(e) => {
                        unresolved.get_or_insert(e);
                    }
                }
            }
            per_rule.push(refs::destinations(&backends));
        }
        let mut results = Vec::new();
        for p in parents {
            let mut res = ParentResult {
                parent: p.clone(),
                not_accepted: None,
                unresolved: unresolved.clone(),
            };
            match attach::resolve(ctx, gws, kind, ns, hostnames, p) {
                Parent::NotOurs => continue,
                Parent::Rejected(why, m) => res.not_accepted = Some((why, m)),
                Parent::Attached(atts) => {
                    for a in &atts {
                        if let Some((gns, gname, i)) = &a.listener {
                            if let Some(g) = gws.get_mut(&(gns.clone(), gname.clone())) {
                                g.listeners[*i].attached += 1;
                            }
                        }
                        let port = a.port.or_else(|| {
                            let (gns, gname, i) = a.listener.as_ref()?;
                            Some(gws.get(&(gns.clone(), gname.clone()))?.listeners[*i].port)
                        });
                        for dests in per_rule.iter().filter(|d| !d.is_empty()) {
                            if kind == "TLSRoute" {
                                let mut m = json!({"sniHosts": a.hosts});
                                if let Some(p) = port {
                                    m["port"] = json!(p);
                                }
                                vs.add_tls(
                                    ns,
                                    a,
                                    &key.to_string(),
                                    json!({"match": [m], "route": dests}),
                                );
                            } else {
                                let mut route = json!({"route": dests});
                                if let Some(p) = port {
                                    route["match"] = json!([{"port": p}]);
                                }
                                vs.add_tcp(ns, a, &key.to_string(), route);
                            }
                        }
                    }
                }
            }
            results.push(res);
        }
        out.statuses
            .insert(key.clone(), route_status(r.meta(), &results));
    }
}
