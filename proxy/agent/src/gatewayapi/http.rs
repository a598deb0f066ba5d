//! HTTPRoute and GRPCRoute rules → VirtualService `http` routes, one Istio route
//! per (rule, match) so that routes of every Gateway API object for one host can
//! be sorted by the Gateway API precedence (exact path > regex > longest prefix >
//! method > most headers > most query params > oldest route > namespace/name >
//! rule and match order) and merged into one VirtualService per host and binding
//! (as Istio does: two mesh VirtualServices may not claim one host).
//!
//! PathPrefix is segment-aware (`/foo` matches `/foo` and `/foo/bar`, not
//! `/foobar`): it becomes two Istio routes, `exact: /foo` and `prefix: /foo/`,
//! which also makes URLRewrite ReplacePrefixMatch exact (`/foo` → `/one`,
//! `/foo/bar` → `/one/bar`) with the proxy's prefix-replacing `rewrite.uri`.

use super::attach::{self, Parent};
use super::ctx::{gateway_api, invalid, Ctx};
use super::gateways::Gateways;
use super::refs::{self, Backend};
use super::rules::{
    grpc_rule, header_ops, http_rule, istio_matches, Filter, MatchIn, PathKind, RuleIn, SortKey,
};
use super::status::{route_status, ParentResult};
use super::translated::Translated;
use super::vsbuild::VsBuilder;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_api::gatewayapi::httproute::HTTPPathModifierType;
use mesh_api::gatewayapi::{self as gw, reason, BackendRef, GatewayApiResource, ParentReference};
use mesh_api::networking::virtual_service::REDIRECT_PREFIX_MARKER;
use serde_json::{json, Map, Value};

/// Translates every HTTPRoute and GRPCRoute.
pub fn translate_routes(
    ctx: &Ctx<'_>,
    gws: &mut Gateways,
    vs: &mut VsBuilder,
    out: &mut Translated,
) {
    for (r, msg) in invalid(ctx.store) {
        let parents = match r {
            GatewayApiResource::HTTPRoute(x) => &x.spec.parent_refs,
            GatewayApiResource::GRPCRoute(x) => &x.spec.parent_refs,
            GatewayApiResource::TLSRoute(x) => &x.spec.parent_refs,
            GatewayApiResource::TCPRoute(x) => &x.spec.parent_refs,
            _ => continue,
        };
        invalid_route_status(r.meta(), parents, &msg, r.key(), out);
    }
    for (key, r) in gateway_api(ctx.store) {
        let (parents, hostnames, rules): (&Vec<ParentReference>, &Vec<String>, Vec<RuleIn<'_>>) =
            match r {
                GatewayApiResource::HTTPRoute(x) => (
                    &x.spec.parent_refs,
                    &x.spec.hostnames,
                    x.spec.rules.iter().map(http_rule).collect(),
                ),
                GatewayApiResource::GRPCRoute(x) => (
                    &x.spec.parent_refs,
                    &x.spec.hostnames,
                    x.spec.rules.iter().map(grpc_rule).collect(),
                ),
                _ => continue,
            };
        let kind = r.kind();
        let ns = &key.namespace;
        let parent_name = key.to_string();
        let mut problems = Problems::default();
        let mut compiled: Vec<(SortKey, MatchIn, Value)> = Vec::new();
        for (ri, rule) in rules.iter().enumerate() {
            compile_rule(
                ctx,
                kind,
                r.meta(),
                &key.name,
                ns,
                ri,
                rule,
                &mut compiled,
                &mut problems,
                out,
            );
        }
        let mut results = Vec::new();
        for p in parents {
            let mut res = ParentResult {
                parent: p.clone(),
                not_accepted: None,
                unresolved: problems.unresolved.clone(),
            };
            match attach::resolve(ctx, gws, kind, ns, hostnames, p) {
                Parent::NotOurs => continue,
                Parent::Rejected(why, m) => res.not_accepted = Some((why, m)),
                Parent::Attached(atts) => {
                    res.not_accepted = problems.not_accepted.clone();
                    for a in &atts {
                        if let Some((gns, gname, i)) = &a.listener {
                            if let Some(g) = gws.get_mut(&(gns.clone(), gname.clone())) {
                                g.listeners[*i].attached += 1;
                            }
                        }
                        for host in &a.hosts {
                            let group = vs.group(ns, a, host, &parent_name);
                            for (k, _, route) in &compiled {
                                let mut route = route.clone();
                                if let Some(port) = a.port {
                                    for m in route["match"].as_array_mut().into_iter().flatten() {
                                        m["port"] = json!(port);
                                    }
                                }
                                group.http.push((k.clone(), route));
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

/// Status of a route that failed validation: not accepted on any parent.
pub fn invalid_route_status(
    meta: &ObjectMeta,
    parents: &[ParentReference],
    msg: &str,
    key: mesh_api::resource::ResourceKey,
    out: &mut Translated,
) {
    let results: Vec<ParentResult> = parents
        .iter()
        .map(|p| ParentResult {
            parent: p.clone(),
            not_accepted: Some((reason::UNSUPPORTED_VALUE, msg.to_string())),
            unresolved: None,
        })
        .collect();
    out.statuses.insert(key, route_status(meta, &results));
}

/// Per-route findings that go into its status.
#[derive(Default)]
pub struct Problems {
    pub not_accepted: Option<(&'static str, String)>,
    pub unresolved: Option<(&'static str, String)>,
}

/// Compiles one rule into sorted-ready Istio http routes.
#[allow(clippy::too_many_arguments)]
fn compile_rule(
    ctx: &Ctx<'_>,
    kind: &str,
    meta: &ObjectMeta,
    name: &str,
    ns: &str,
    ri: usize,
    rule: &RuleIn<'_>,
    compiled: &mut Vec<(SortKey, MatchIn, Value)>,
    problems: &mut Problems,
    out: &mut Translated,
) {
    let here = format!("{kind}/{ns}/{name}: spec.rules[{ri}]");
    let created = meta
        .creation_timestamp
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let matches = if rule.matches.is_empty() {
        vec![MatchIn::default()]
    } else {
        rule.matches.clone()
    };
    // Route-level parts shared by every match.
    let mut base = Map::new();
    let mut headers = Map::new();
    let mut redirect: Option<&gw::httproute::HTTPRequestRedirectFilter> = None;
    let mut rewrite: Option<&gw::httproute::HTTPURLRewriteFilter> = None;
    let mut unsupported = false;
    for f in &rule.filters {
        match f {
            Filter::RequestHeaders(h) => {
                headers.insert("request".into(), header_ops(h));
            }
            Filter::ResponseHeaders(h) => {
                headers.insert("response".into(), header_ops(h));
            }
            Filter::Mirror(m) => {
                let b = BackendRef {
                    group: m.backend_ref.group.clone(),
                    kind: m.backend_ref.kind.clone(),
                    name: m.backend_ref.name.clone(),
                    namespace: m.backend_ref.namespace.clone(),
                    port: m.backend_ref.port,
                    ..Default::default()
                };
                match refs::backend(
                    ctx,
                    kind,
                    ns,
                    &b,
                    &format!("spec.rules[{ri}].filters.requestMirror.backendRef"),
                ) {
                    Ok(b) => {
                        let mut d = json!({"host": b.host});
                        if let Some(p) = b.port {
                            d["port"] = json!({"number": p});
                        }
                        if base.contains_key("mirror") {
                            out.warnings.push(format!(
                                "warning: {here}: only the first RequestMirror is applied"
                            ));
                            continue;
                        }
                        base.insert("mirror".into(), d);
                        let pct = match (m.percent, &m.fraction) {
                            (Some(p), _) => Some(f64::from(p)),
                            (None, Some(fr)) if fr.denominator > 0 => {
                                Some(f64::from(fr.numerator) * 100.0 / f64::from(fr.denominator))
                            }
                            _ => None,
                        };
                        if let Some(p) = pct {
                            base.insert("mirrorPercentage".into(), json!({"value": p}));
                        }
                    }
                    Err(e) => {
                        problems.unresolved.get_or_insert(e);
                    }
                }
            }
            Filter::Redirect(r) => redirect = Some(r),
            Filter::Rewrite(r) => rewrite = Some(r),
            Filter::Unsupported => unsupported = true,
        }
    }
    if unsupported {
        problems.not_accepted.get_or_insert((reason::UNSUPPORTED_VALUE, format!("spec.rules[{ri}].filters: ExtensionRef filters are not supported; the rule answers 500")));
    }
    if !headers.is_empty() {
        base.insert("headers".into(), Value::Object(headers));
    }
    // Backends.
    let mut backends: Vec<Backend> = Vec::new();
    let mut bad = 0;
    for (bi, (b, filters)) in rule.backends.iter().enumerate() {
        match refs::backend(
            ctx,
            kind,
            ns,
            b,
            &format!("spec.rules[{ri}].backendRefs[{bi}]"),
        ) {
            Ok(mut be) => {
                let mut h = Map::new();
                for f in filters {
                    match f {
                        Filter::RequestHeaders(x) => { h.insert("request".into(), header_ops(x)); }
                        Filter::ResponseHeaders(x) => { h.insert("response".into(), header_ops(x)); }
                        _ => out.warnings.push(format!("warning: {here}.backendRefs[{bi}].filters: only header modifiers are applied per backend")),
                    }
                }
                if !h.is_empty() {
                    be.headers = Some(Value::Object(h));
                }
                backends.push(be);
            }
            Err(e) => {
                bad += 1;
                problems.unresolved.get_or_insert(e);
            }
        }
    }
    if bad > 0 && !backends.is_empty() {
        out.warnings.push(format!("warning: {here}: {bad} unresolved backendRefs dropped; their share of traffic goes to the others"));
    }
    let dests = refs::destinations(&backends);
    // Timeouts and retries.
    if let Some(t) = rule.timeouts {
        if let Some(v) = t.request.as_ref().or(t.backend_request.as_ref()) {
            if v != "0s" {
                base.insert("timeout".into(), json!(v));
            }
        }
    }
    if let Some(r) = rule.retry {
        let mut retries = json!({"attempts": r.attempts.unwrap_or(2)});
        let mut on = vec!["connect-failure".to_string(), "refused-stream".to_string()];
        on.extend(r.codes.iter().map(|c| c.to_string()));
        if r.codes.is_empty() {
            on.push("retriable-status-codes".into());
        }
        retries["retryOn"] = json!(on.join(","));
        if let Some(p) = rule.timeouts.and_then(|t| t.backend_request.as_ref()) {
            retries["perTryTimeout"] = json!(p);
        }
        if r.backoff.is_some() {
            out.warnings.push(format!(
                "warning: {here}.retry.backoff: not supported, the proxy's default backoff applies"
            ));
        }
        base.insert("retries".into(), retries);
    }
    for (mi, m) in matches.iter().enumerate() {
        for (pk, im) in istio_matches(m) {
            let mut route = base.clone();
            route.insert("name".into(), json!(format!("{ns}.{name}.{ri}.{mi}")));
            route.insert("match".into(), json!([im]));
            if unsupported {
                route.insert("directResponse".into(), json!({"status": 500}));
            } else if let Some(rd) = redirect {
                let mut v = Map::new();
                if let Some(s) = &rd.scheme {
                    v.insert("scheme".into(), json!(s));
                }
                if let Some(h) = &rd.hostname {
                    v.insert("authority".into(), json!(h));
                }
                match (rd.port, rd.scheme.as_deref()) {
                    (Some(p), _) => {
                        v.insert("port".into(), json!(p));
                    }
                    (None, Some(_)) => {
                        v.insert("derivePort".into(), json!("FROM_PROTOCOL_DEFAULT"));
                    }
                    _ => {}
                }
                if let Some(p) = &rd.path {
                    match (p.type_, &pk) {
                        (HTTPPathModifierType::ReplaceFullPath, _) => { v.insert("uri".into(), json!(p.replace_full_path.clone().unwrap_or_default())); }
                        (HTTPPathModifierType::ReplacePrefixMatch, PathKind::Exact(_)) => { v.insert("uri".into(), json!(p.replace_prefix_match.clone().unwrap_or_default())); }
                        // The proxy replaces only the matched prefix (REDIRECT_PREFIX_MARKER).
                        (HTTPPathModifierType::ReplacePrefixMatch, PathKind::Prefix(_) | PathKind::Root) => {
                            let r = p.replace_prefix_match.clone().unwrap_or_default();
                            let r = if r.ends_with('/') { r } else { format!("{r}/") };
                            v.insert("uri".into(), json!(format!("{REDIRECT_PREFIX_MARKER}{r}")));
                        }
                        (HTTPPathModifierType::ReplacePrefixMatch, PathKind::Regex(_)) => out.warnings.push(format!("warning: {here}.filters.requestRedirect.path: ReplacePrefixMatch on a regex match is not supported; the path is kept")),
                    }
                }
                v.insert("redirectCode".into(), json!(rd.status_code));
                route.insert("redirect".into(), Value::Object(v));
            } else if dests.is_empty() {
                route.insert("directResponse".into(), json!({"status": 500}));
            } else {
                route.insert("route".into(), json!(dests));
            }
            if let (Some(rw), false) = (rewrite, route.contains_key("redirect")) {
                let mut v = Map::new();
                if let Some(h) = &rw.hostname {
                    v.insert("authority".into(), json!(h));
                }
                if let Some(p) = &rw.path {
                    match (p.type_, &pk) {
                        (HTTPPathModifierType::ReplaceFullPath, _) => {
                            let to = p.replace_full_path.clone().unwrap_or_default().replace('$', "$$");
                            v.insert("uriRegexRewrite".into(), json!({"match": "^.*$", "rewrite": to}));
                        }
                        (HTTPPathModifierType::ReplacePrefixMatch, PathKind::Exact(_)) => {
                            v.insert("uri".into(), json!(p.replace_prefix_match.clone().unwrap_or_default()));
                        }
                        (HTTPPathModifierType::ReplacePrefixMatch, PathKind::Prefix(_) | PathKind::Root) => {
                            let r = p.replace_prefix_match.clone().unwrap_or_default();
                            let r = if r.ends_with('/') { r } else { format!("{r}/") };
                            v.insert("uri".into(), json!(r));
                        }
                        (HTTPPathModifierType::ReplacePrefixMatch, PathKind::Regex(_)) => out.warnings.push(format!("warning: {here}.filters.urlRewrite.path: ReplacePrefixMatch on a regex match is not supported; the path is kept")),
                    }
                }
                if !v.is_empty() {
                    route.insert("rewrite".into(), Value::Object(v));
                }
            }
            // Rank by the Gateway API match, not the Istio half of a prefix.
            let (rank, len) = match m.path.as_ref().unwrap_or(&PathKind::Root) {
                PathKind::Exact(v) => (0, v.len()),
                PathKind::Regex(v) => (1, v.len()),
                PathKind::Prefix(v) => (2, v.len() + 1),
                PathKind::Root => (2, 1),
            };
            let key = SortKey {
                path_rank: rank,
                path_len: std::cmp::Reverse(len),
                no_method: m.method.is_none(),
                headers: std::cmp::Reverse(m.headers.len()),
                query: std::cmp::Reverse(m.query.len()),
                created: created.clone(),
                route: format!("{ns}/{name}"),
                rule: ri,
                matched: mi,
            };
            compiled.push((key, m.clone(), Value::Object(route)));
        }
    }
}
