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

use super::attach::{self, Attachment, Parent};
use super::gateways::Gateways;
use super::refs::{self, Backend};
use super::status::{route_status, ParentResult};
use super::{gateway_api, invalid, istio_object, name_part, Ctx, Translated, GENERATED_SUFFIX};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_api::gatewayapi::grpcroute::GRPCMethodMatchType;
use mesh_api::gatewayapi::grpcroute::GRPCRouteFilterType;
use mesh_api::gatewayapi::httproute::{HTTPPathModifierType, HTTPRouteFilterType, PathMatchType};
use mesh_api::gatewayapi::{
    self as gw, reason, BackendRef, GatewayApiResource, HTTPHeaderFilter, HTTPHeaderMatch,
    HeaderMatchType, ParentReference,
};
use mesh_api::networking::virtual_service::REDIRECT_PREFIX_MARKER;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Precedence of one generated route (smaller sorts first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    path_rank: u8,
    path_len: std::cmp::Reverse<usize>,
    no_method: bool,
    headers: std::cmp::Reverse<usize>,
    query: std::cmp::Reverse<usize>,
    created: String,
    route: String,
    rule: usize,
    matched: usize,
}

/// The path part of a match, normalised.
#[derive(Debug, Clone, PartialEq)]
pub enum PathKind {
    Exact(String),
    /// Segment prefix without trailing slash (never `/`).
    Prefix(String),
    /// `PathPrefix /`: everything.
    Root,
    Regex(String),
}

/// A match in kind-neutral form.
#[derive(Debug, Clone, Default)]
pub struct MatchIn {
    pub path: Option<PathKind>,
    pub headers: Vec<HTTPHeaderMatch>,
    pub query: Vec<(HeaderMatchType, String, String)>,
    pub method: Option<String>,
}

/// A filter in kind-neutral form.
pub enum Filter<'a> {
    RequestHeaders(&'a HTTPHeaderFilter),
    ResponseHeaders(&'a HTTPHeaderFilter),
    Mirror(&'a gw::HTTPRequestMirrorFilter),
    Redirect(&'a gw::httproute::HTTPRequestRedirectFilter),
    Rewrite(&'a gw::httproute::HTTPURLRewriteFilter),
    /// ExtensionRef (not supported).
    Unsupported,
}

/// One rule in kind-neutral form.
pub struct RuleIn<'a> {
    pub matches: Vec<MatchIn>,
    pub filters: Vec<Filter<'a>>,
    pub backends: Vec<(&'a BackendRef, Vec<Filter<'a>>)>,
    pub timeouts: Option<&'a gw::httproute::HTTPRouteTimeouts>,
    pub retry: Option<&'a gw::httproute::HTTPRouteRetry>,
}

/// Generated VirtualServices, grouped by (namespace, binding, host, exportTo).
#[derive(Default)]
pub struct VsBuilder {
    groups: BTreeMap<(String, String, String, Vec<String>), Group>,
}

#[derive(Default)]
struct Group {
    http: Vec<(SortKey, Value)>,
    tls: Vec<Value>,
    tcp: Vec<Value>,
    parents: BTreeSet<String>,
}

impl VsBuilder {
    fn group(&mut self, ns: &str, a: &Attachment, host: &str, parent: &str) -> &mut Group {
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

    pub fn add_tcp(&mut self, ns: &str, a: &Attachment, parent: &str, route: Value) {
        self.group(ns, a, "*", parent).tcp.push(route);
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

fn http_filter(f: &gw::httproute::HTTPRouteFilter) -> Filter<'_> {
    let none = || Filter::Unsupported;
    match f.type_ {
        HTTPRouteFilterType::RequestHeaderModifier => f
            .request_header_modifier
            .as_ref()
            .map_or_else(none, Filter::RequestHeaders),
        HTTPRouteFilterType::ResponseHeaderModifier => f
            .response_header_modifier
            .as_ref()
            .map_or_else(none, Filter::ResponseHeaders),
        HTTPRouteFilterType::RequestMirror => {
            f.request_mirror.as_ref().map_or_else(none, Filter::Mirror)
        }
        HTTPRouteFilterType::RequestRedirect => f
            .request_redirect
            .as_ref()
            .map_or_else(none, Filter::Redirect),
        HTTPRouteFilterType::URLRewrite => {
            f.url_rewrite.as_ref().map_or_else(none, Filter::Rewrite)
        }
        HTTPRouteFilterType::ExtensionRef => Filter::Unsupported,
    }
}

fn grpc_filter(f: &gw::grpcroute::GRPCRouteFilter) -> Filter<'_> {
    let none = || Filter::Unsupported;
    match f.type_ {
        GRPCRouteFilterType::RequestHeaderModifier => f
            .request_header_modifier
            .as_ref()
            .map_or_else(none, Filter::RequestHeaders),
        GRPCRouteFilterType::ResponseHeaderModifier => f
            .response_header_modifier
            .as_ref()
            .map_or_else(none, Filter::ResponseHeaders),
        GRPCRouteFilterType::RequestMirror => {
            f.request_mirror.as_ref().map_or_else(none, Filter::Mirror)
        }
        _ => Filter::Unsupported,
    }
}

fn http_rule(r: &gw::httproute::HTTPRouteRule) -> RuleIn<'_> {
    RuleIn {
        matches: r
            .matches
            .iter()
            .map(|m| MatchIn {
                path: Some(match m.path.type_ {
                    PathMatchType::Exact => PathKind::Exact(m.path.value.clone()),
                    PathMatchType::RegularExpression => PathKind::Regex(m.path.value.clone()),
                    PathMatchType::PathPrefix => {
                        let v = m.path.value.trim_end_matches('/');
                        if v.is_empty() {
                            PathKind::Root
                        } else {
                            PathKind::Prefix(v.to_string())
                        }
                    }
                }),
                headers: m.headers.clone(),
                query: m
                    .query_params
                    .iter()
                    .map(|q| (q.type_, q.name.clone(), q.value.clone()))
                    .collect(),
                method: m.method.clone(),
            })
            .collect(),
        filters: r.filters.iter().map(http_filter).collect(),
        backends: r
            .backend_refs
            .iter()
            .map(|b| (&b.backend, b.filters.iter().map(http_filter).collect()))
            .collect(),
        timeouts: r.timeouts.as_ref(),
        retry: r.retry.as_ref(),
    }
}

fn grpc_rule(r: &gw::grpcroute::GRPCRouteRule) -> RuleIn<'_> {
    RuleIn {
        matches: r
            .matches
            .iter()
            .map(|m| MatchIn {
                path: m.method.as_ref().map(|mm| {
                    let (s, me) = (mm.service.as_deref(), mm.method.as_deref());
                    match (mm.type_, s, me) {
                        (GRPCMethodMatchType::Exact, Some(s), Some(me)) => {
                            PathKind::Exact(format!("/{s}/{me}"))
                        }
                        (GRPCMethodMatchType::Exact, Some(s), None) => {
                            PathKind::Prefix(format!("/{s}"))
                        }
                        (GRPCMethodMatchType::Exact, None, Some(me)) => {
                            PathKind::Regex(format!("/[^/]+/{}", regex_escape(me)))
                        }
                        (GRPCMethodMatchType::RegularExpression, s, me) => PathKind::Regex(
                            format!("/{}/{}", s.unwrap_or("[^/]+"), me.unwrap_or("[^/]+")),
                        ),
                        (_, None, None) => PathKind::Root,
                    }
                }),
                headers: m.headers.clone(),
                query: vec![],
                method: None,
            })
            .collect(),
        filters: r.filters.iter().map(grpc_filter).collect(),
        backends: r
            .backend_refs
            .iter()
            .map(|b| (&b.backend, b.filters.iter().map(grpc_filter).collect()))
            .collect(),
        timeouts: None,
        retry: None,
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

fn string_match(t: HeaderMatchType, v: &str) -> Value {
    match t {
        HeaderMatchType::Exact => json!({"exact": v}),
        HeaderMatchType::RegularExpression => json!({"regex": v}),
    }
}

fn header_ops(f: &HTTPHeaderFilter) -> Value {
    let mut v = Map::new();
    let map = |hs: &Vec<gw::HTTPHeader>| {
        hs.iter()
            .map(|h| (h.name.to_ascii_lowercase(), json!(h.value)))
            .collect::<Map<_, _>>()
    };
    if !f.set.is_empty() {
        v.insert("set".into(), Value::Object(map(&f.set)));
    }
    if !f.add.is_empty() {
        v.insert("add".into(), Value::Object(map(&f.add)));
    }
    if !f.remove.is_empty() {
        v.insert(
            "remove".into(),
            json!(f
                .remove
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect::<Vec<_>>()),
        );
    }
    Value::Object(v)
}

/// The Istio match objects (one or two) and sort keys of one Gateway API match.
fn istio_matches(m: &MatchIn) -> Vec<(PathKind, Value)> {
    let mut base = Map::new();
    let headers: Map<String, Value> = m
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), string_match(h.type_, &h.value)))
        .collect();
    if !headers.is_empty() {
        base.insert("headers".into(), Value::Object(headers));
    }
    let query: Map<String, Value> = m
        .query
        .iter()
        .map(|(t, n, v)| (n.clone(), string_match(*t, v)))
        .collect();
    if !query.is_empty() {
        base.insert("queryParams".into(), Value::Object(query));
    }
    if let Some(me) = &m.method {
        base.insert("method".into(), json!({"exact": me}));
    }
    let with = |uri: Value| {
        let mut b = base.clone();
        b.insert("uri".into(), uri);
        Value::Object(b)
    };
    match m.path.clone().unwrap_or(PathKind::Root) {
        PathKind::Exact(v) => vec![(PathKind::Exact(v.clone()), with(json!({"exact": v})))],
        PathKind::Regex(v) => vec![(PathKind::Regex(v.clone()), with(json!({"regex": v})))],
        PathKind::Root => vec![(PathKind::Root, with(json!({"prefix": "/"})))],
        PathKind::Prefix(v) => vec![
            (PathKind::Exact(v.clone()), with(json!({"exact": v}))),
            (
                PathKind::Prefix(v.clone()),
                with(json!({"prefix": format!("{v}/")})),
            ),
        ],
    }
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
