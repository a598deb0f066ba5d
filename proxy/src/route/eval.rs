//! Evaluating compiled routes, per request or connection, as pure functions
//! of what is known about it ([`Facts`], [`L4Facts`]): the hot path, apart
//! from the compiling that runs once per snapshot.

use std::collections::BTreeMap;

use super::types::{L4Route, MatchEntry, Matcher, Route, Target};

/// What the routing decision needs to know about a request.
pub struct Facts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub headers: &'a http::HeaderMap,
    pub port: u16,
    pub source_labels: &'a BTreeMap<String, String>,
    pub source_namespace: &'a str,
    /// The Gateway (`namespace/name`) whose server the request came through;
    /// `None` on a sidecar (the `mesh` gateway).
    pub gateway: Option<&'a str>,
}

impl MatchEntry {
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        let header =
            |name: &str| -> Option<&str> { f.headers.get(name).and_then(|v| v.to_str().ok()) };
        if let Some(m) = &self.uri {
            let path = if self.ignore_uri_case {
                f.path.to_ascii_lowercase()
            } else {
                f.path.to_string()
            };
            if !m.matches(&path) {
                return false;
            }
        }
        let opt_ok = |m: &Option<Matcher>, v: &str| m.as_ref().is_none_or(|m| m.matches(v));
        if !opt_ok(&self.scheme, f.scheme)
            || !opt_ok(&self.method, f.method)
            || !opt_ok(&self.authority, f.authority)
        {
            return false;
        }
        if !self
            .headers
            .iter()
            .all(|(k, m)| header(k).is_some_and(|v| m.matches(v)))
        {
            return false;
        }
        if self
            .without_headers
            .iter()
            .any(|(k, m)| header(k).is_some_and(|v| m.matches(v)))
        {
            return false;
        }
        if !self.query.is_empty() {
            let params: Vec<(&str, &str)> = f
                .query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap_or((p, "")))
                .collect();
            if !self
                .query
                .iter()
                .all(|(k, m)| params.iter().any(|(pk, pv)| pk == k && m.matches(pv)))
            {
                return false;
            }
        }
        if self.port.is_some_and(|p| p != f.port) {
            return false;
        }
        if !self
            .source_labels
            .iter()
            .all(|(k, v)| f.source_labels.get(k) == Some(v))
        {
            return false;
        }
        if self
            .source_namespace
            .as_deref()
            .is_some_and(|ns| ns != f.source_namespace)
        {
            return false;
        }
        // A per-match `gateways` list restricts the entry; empty inherits the
        // VirtualService's, which already bound it here.
        let here = f.gateway.unwrap_or("mesh");
        if !self.gateways.is_empty() && !self.gateways.iter().any(|g| g == here) {
            return false;
        }
        true
    }
}

/// The first route whose match list admits the request.
pub fn select<'r>(routes: &'r [Route], f: &Facts<'_>) -> Option<&'r Route> {
    routes
        .iter()
        .find(|r| r.matches.is_empty() || r.matches.iter().any(|m| m.matches(f)))
}

/// Weighted choice among a route's targets (`roll` in `0..100` is the caller's
/// random draw, injectable for tests).
pub fn pick_target(targets: &[Target], roll: f64) -> Option<&Target> {
    let total: u32 = targets.iter().map(|t| t.weight).sum();
    if total == 0 {
        return targets.first();
    }
    let mut point = roll / 100.0 * f64::from(total);
    for t in targets {
        if point < f64::from(t.weight) {
            return Some(t);
        }
        point -= f64::from(t.weight);
    }
    targets.iter().rev().find(|t| t.weight > 0)
}

/// Whether a draw in `0..100` falls within `percentage`.
pub fn hit(percentage: f64, roll: f64) -> bool {
    roll < percentage
}

pub use mesh_api::networking::virtual_service::REDIRECT_PREFIX_MARKER;

/// The path after a `rewrite.uri` (or a prefix-replacing `redirect.uri`, see
/// [`REDIRECT_PREFIX_MARKER`]): the matched prefix is replaced when the route
/// matched on a prefix, otherwise the whole path is.
pub fn rewrite_path(route: &Route, f: &Facts<'_>, path_and_query: &str) -> Option<String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let prefix_redirect = route
        .redirect
        .as_ref()
        .and_then(|r| r.uri.as_deref())
        .and_then(|u| u.strip_prefix(REDIRECT_PREFIX_MARKER))
        .map(str::to_string);
    let new_path = if let Some((re, with)) = &route.rewrite_regex {
        re.replace_all(path, with.as_str()).into_owned()
    } else {
        let to = match &prefix_redirect {
            Some(t) => t,
            None => route.rewrite.as_ref()?.uri.as_ref()?,
        };
        let prefix = route
            .matches
            .iter()
            .find(|m| m.matches(f))
            .and_then(|m| match &m.uri {
                Some(Matcher::Prefix(p)) => Some(p.clone()),
                _ => None,
            });
        match prefix {
            Some(p) => {
                let rest = &path[p.len().min(path.len())..];
                if to.ends_with('/') && rest.starts_with('/') {
                    format!("{to}{}", &rest[1..])
                } else {
                    format!("{to}{rest}")
                }
            }
            None => to.clone(),
        }
    };
    Some(match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    })
}

/// CORS: whether `origin` is allowed by the route's policy.
pub fn cors_allows(route: &Route, origin: &str) -> bool {
    route.cors_origins.iter().any(|m| m.matches(origin))
}

/// What an L4 route may match on.
pub struct L4Facts<'a> {
    pub dst: std::net::SocketAddr,
    pub sni: Option<&'a str>,
    pub source_labels: &'a BTreeMap<String, String>,
    pub source_namespace: &'a str,
}

impl L4Route {
    pub fn matches(&self, f: &L4Facts<'_>) -> bool {
        if !self.has_match {
            return true;
        }
        (self.ports.is_empty() || self.ports.contains(&f.dst.port()))
            && (self.subnets.is_empty() || self.subnets.iter().any(|n| n.contains(&f.dst.ip())))
            && self
                .source_labels
                .iter()
                .all(|(k, v)| f.source_labels.get(k) == Some(v))
            && self
                .source_namespace
                .as_deref()
                .is_none_or(|ns| ns == f.source_namespace)
            && (self.sni.is_empty()
                || f.sni.is_some_and(|sni| {
                    self.sni.iter().any(|p| match p.strip_prefix('*') {
                        Some(suffix) => sni.ends_with(suffix),
                        None => p == sni,
                    })
                }))
    }
}
