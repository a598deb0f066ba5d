//! What an inbound request or TCP connection passes before it reaches the app,
//! in Envoy's filter order: path normalization, AuthorizationPolicy
//! ([`crate::authz`]), then the local rate limit ([`crate::ratelimit`]).
//! Refusals are answered the way Envoy answers them: 400 for a bad path,
//! 403 `RBAC: access denied` (response code details
//! `rbac_access_denied_matched_policy[...]`, no response flag, like Envoy's RBAC
//! filter), 429 `local_rate_limited` with `x-local-rate-limit: true` and flag `RL`.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Uri};

use crate::authz::normalize::{self, PathNormalization};
use crate::authz::{Facts, HttpFacts, Verdict};
use crate::body::Body;
use crate::conn::ConnCtx;
use crate::snapshot::Snapshot;

/// Why a request does not reach the app.
#[derive(Debug)]
pub enum Refusal {
    BadPath(String),
    Denied(Verdict),
    RateLimited,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadPath(_) => StatusCode::BAD_REQUEST,
            Refusal::Denied(_) => StatusCode::FORBIDDEN,
            Refusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }
    /// The `response_flags` label and access-log field.
    pub fn flags(&self) -> &'static str {
        match self {
            Refusal::RateLimited => "RL",
            _ => "-",
        }
    }
    /// Envoy's response code details.
    pub fn details(&self) -> String {
        match self {
            Refusal::BadPath(_) => "path_normalization_failed".into(),
            Refusal::Denied(v) => v.details(),
            Refusal::RateLimited => "local_rate_limited".into(),
        }
    }
    /// What was wrong with the path, for the log.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Refusal::BadPath(why) => Some(why),
            _ => None,
        }
    }
    pub fn response(&self) -> http::Response<Body> {
        let (body, limited) = match self {
            Refusal::BadPath(_) => ("Bad Request", false),
            Refusal::Denied(_) => ("RBAC: access denied", false),
            Refusal::RateLimited => ("local_rate_limited", true),
        };
        let mut r = crate::util::full(self.status(), body);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if limited {
            r.headers_mut()
                .insert("x-local-rate-limit", HeaderValue::from_static("true"));
        }
        r
    }
}

/// `<trust-domain>/ns/<ns>/sa/<sa>`: the principal policies name.
fn principal(id: &mesh_api::Identity) -> String {
    format!(
        "{}/ns/{}/sa/{}",
        id.trust_domain, id.namespace, id.service_account
    )
}

const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The last `X-Forwarded-For` hop, as Envoy derives the remote address with no
/// trusted hops; else the peer.
fn remote_ip<B>(req: &Request<B>, peer: IpAddr) -> IpAddr {
    req.headers()
        .get_all(X_FORWARDED_FOR)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

/// Normalizes the request's path in place (the app gets the normalized one).
fn normalize_path<B>(req: &mut Request<B>, mode: PathNormalization) -> Result<(), Refusal> {
    let Some(pq) = req.uri().path_and_query() else {
        return Ok(());
    };
    let n = normalize::normalize(pq.as_str(), mode).map_err(|e| Refusal::BadPath(e.to_string()))?;
    if let Cow::Owned(n) = n {
        if n == pq.as_str() {
            return Ok(());
        }
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(
            n.parse()
                .map_err(|_| Refusal::BadPath(format!("normalized path {n:?} is invalid")))?,
        );
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|e| Refusal::BadPath(format!("{n:?}: {e}")))?;
    }
    Ok(())
}

/// Runs every check on an inbound HTTP request; `Ok(audited)` lets it through.
pub fn check<B>(
    req: &mut Request<B>,
    ctx: &ConnCtx,
    snap: Option<&Snapshot>,
) -> Result<bool, Refusal> {
    let shared = &ctx.shared;
    normalize_path(req, shared.cfg.path_normalization)?;
    let mut audited = false;
    if let Some(authz) = snap.map(|s| &s.authz).filter(|a| !a.is_empty()) {
        let principal = ctx.peer_identity.as_ref().map(principal);
        let host = crate::util::authority_of(req).unwrap_or_default();
        let path = req.uri().path();
        let facts = Facts {
            source_ip: ctx.peer.ip().to_canonical(),
            remote_ip: remote_ip(req, ctx.peer.ip().to_canonical()),
            destination_ip: ctx.orig_dst.ip().to_canonical(),
            destination_port: ctx.orig_dst.port(),
            principal: principal.as_deref(),
            namespace: ctx.peer_identity.as_ref().map(|i| i.namespace.as_str()),
            sni: None,
            http: Some(HttpFacts {
                method: req.method().as_str(),
                path: normalize::path_only(path),
                host: &host,
                headers: req.headers(),
            }),
        };
        match authz.evaluate(&facts) {
            Verdict::Allow { audited: a } => audited = a,
            denied => return Err(Refusal::Denied(denied)),
        }
    }
    if !shared.rate_limits.is_empty() && !shared.rate_limits.admit(ctx.orig_dst.port()) {
        return Err(Refusal::RateLimited);
    }
    Ok(audited)
}

/// AuthorizationPolicy for an inbound TCP connection (no HTTP facts).
pub fn tcp_verdict(
    snap: Option<&Snapshot>,
    peer: SocketAddr,
    orig_dst: SocketAddr,
    identity: Option<&mesh_api::Identity>,
) -> Verdict {
    let Some(authz) = snap.map(|s| &s.authz).filter(|a| !a.is_empty()) else {
        return Verdict::Allow { audited: false };
    };
    let principal = identity.map(principal);
    authz.evaluate(&Facts {
        source_ip: peer.ip().to_canonical(),
        remote_ip: peer.ip().to_canonical(),
        destination_ip: orig_dst.ip().to_canonical(),
        destination_port: orig_dst.port(),
        principal: principal.as_deref(),
        namespace: identity.map(|i| i.namespace.as_str()),
        sni: None,
        http: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ip_is_the_last_forwarded_hop() {
        let peer: IpAddr = "10.88.0.2".parse().unwrap();
        let req = Request::builder()
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-for", "1.1.1.1, 198.51.100.4")
            .body(())
            .unwrap();
        assert_eq!(
            remote_ip(&req, peer),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        let bare = Request::builder().body(()).unwrap();
        assert_eq!(remote_ip(&bare, peer), peer);
        let junk = Request::builder()
            .header("x-forwarded-for", "not-an-ip")
            .body(())
            .unwrap();
        assert_eq!(remote_ip(&junk, peer), peer);
    }

    #[test]
    fn the_request_carries_the_normalized_path() {
        let mut req = Request::builder()
            .uri("http://echo:8080/a/../b//c?x=/../y")
            .body(())
            .unwrap();
        normalize_path(&mut req, PathNormalization::MergeSlashes).unwrap();
        assert_eq!(req.uri().to_string(), "http://echo:8080/b/c?x=/../y");
        let mut nul = Request::builder().uri("/a%00").body(()).unwrap();
        let e = normalize_path(&mut nul, PathNormalization::Base).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.reason().unwrap().contains("/a%00"));
    }

    #[test]
    fn refusals_answer_like_envoy() {
        let r = Refusal::RateLimited.response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["x-local-rate-limit"], "true");
        assert_eq!(Refusal::RateLimited.flags(), "RL");
        let d = Refusal::Denied(Verdict::Deny { policy: None });
        assert_eq!(d.response().status(), 403);
        assert_eq!(d.flags(), "-");
        assert_eq!(d.details(), "rbac_access_denied_matched_policy[none]");
    }
}
