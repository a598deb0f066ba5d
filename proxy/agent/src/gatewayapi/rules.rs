//! HTTPRoute and GRPCRoute rules in one kind-neutral form ([`RuleIn`]), and the
//! Istio shapes of their parts: matches (a PathPrefix becomes an exact and a
//! `/`-terminated prefix match), header operations, string matches.

use mesh_api::gatewayapi::grpcroute::{GRPCMethodMatchType, GRPCRouteFilterType};
use mesh_api::gatewayapi::httproute::{HTTPRouteFilterType, PathMatchType};
use mesh_api::gatewayapi::{
    self as gw, BackendRef, HTTPHeaderFilter, HTTPHeaderMatch, HeaderMatchType,
};
use serde_json::{json, Map, Value};

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

pub(super) fn http_filter(f: &gw::httproute::HTTPRouteFilter) -> Filter<'_> {
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

pub(super) fn grpc_filter(f: &gw::grpcroute::GRPCRouteFilter) -> Filter<'_> {
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

pub(super) fn http_rule(r: &gw::httproute::HTTPRouteRule) -> RuleIn<'_> {
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

pub(super) fn grpc_rule(r: &gw::grpcroute::GRPCRouteRule) -> RuleIn<'_> {
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

pub(super) fn regex_escape(s: &str) -> String {
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

pub(super) fn string_match(t: HeaderMatchType, v: &str) -> Value {
    match t {
        HeaderMatchType::Exact => json!({"exact": v}),
        HeaderMatchType::RegularExpression => json!({"regex": v}),
    }
}

pub(super) fn header_ops(f: &HTTPHeaderFilter) -> Value {
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
pub(super) fn istio_matches(m: &MatchIn) -> Vec<(PathKind, Value)> {
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

/// Precedence of one generated route (smaller sorts first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    pub(super) path_rank: u8,
    pub(super) path_len: std::cmp::Reverse<usize>,
    pub(super) no_method: bool,
    pub(super) headers: std::cmp::Reverse<usize>,
    pub(super) query: std::cmp::Reverse<usize>,
    pub(super) created: String,
    pub(super) route: String,
    pub(super) rule: usize,
    pub(super) matched: usize,
}
