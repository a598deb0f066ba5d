//! AuthorizationPolicy enforcement on inbound traffic, Istio's semantics.
//!
//! The agent sends the policies that select this workload (root namespace =
//! mesh-wide, own namespace, `selector`); [`Authz::compile`] turns them into
//! matchers once per view, and [`Authz::evaluate`] decides a request or a TCP
//! connection from its [`Facts`] without allocating.
//!
//! Order: CUSTOM, then DENY, then ALLOW. A DENY rule that matches denies; if any
//! ALLOW policy applies, one of its rules must match; AUDIT only marks the
//! request. A rule matches when its `from`, `to` and `when` all match (each
//! list OR-ed; a rule with none of them matches everything). An ALLOW policy
//! without rules matches nothing (so it denies all); a DENY without rules
//! denies nothing.
//!
//! Where this proxy cannot honour a field it fails closed, as Istio does for
//! HTTP-only fields on TCP: an ALLOW rule using it never matches, a DENY rule
//! ignores it (matching more). That covers HTTP-only fields (`hosts`,
//! `methods`, `paths`, `requestPrincipals`, `request.*` conditions) on TCP
//! connections and unknown `when` keys. CUSTOM needs an external authorizer
//! this proxy does not have: requests matching a CUSTOM policy are denied and a
//! warning names the policy. Policies with `targetRef(s)` (gateway/waypoint
//! attachment) do not apply to sidecars and are skipped.
//!
//! Principals and namespaces come from the peer's mTLS identity; without mTLS
//! they are absent, so `principals`/`namespaces`/`source.principal`/
//! `source.namespace` never match (and their `not*` forms always do), like
//! Envoy on a plaintext connection. `requestPrincipals`/`request.auth.*` need
//! RequestAuthentication (JWT), not supported yet: they are absent too.

pub mod matcher;
pub mod normalize;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use http::HeaderMap;
use mesh_api::security::{AuthorizationPolicySpec, Condition, Operation, Source};

use matcher::{IpList, PortList, StrList};

/// What a request or connection is, as policies see it.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The direct peer's address (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The original client (`remote.ip`, `remoteIpBlocks`): the last
    /// `X-Forwarded-For` entry when present (Envoy with no trusted hops), else the peer.
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    /// `<trust-domain>/ns/<ns>/sa/<sa>` from the peer certificate.
    pub principal: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub sni: Option<&'a str>,
    /// `None` on a TCP connection.
    pub http: Option<HttpFacts<'a>>,
}

/// The HTTP part of [`Facts`].
#[derive(Debug, Clone, Copy)]
pub struct HttpFacts<'a> {
    pub method: &'a str,
    /// Normalized, without the query.
    pub path: &'a str,
    /// `Host`/`:authority`, as sent.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
}

/// The outcome of evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        audited: bool,
    },
    /// `policy` is Istio's id of the DENY rule that matched
    /// (`ns[<ns>]-policy[<name>]-rule[<i>]`), or `None` when no ALLOW matched.
    Deny {
        policy: Option<String>,
    },
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
    /// Envoy's response code details: `rbac_access_denied_matched_policy[...]`.
    pub fn details(&self) -> String {
        match self {
            Verdict::Allow { .. } => "-".into(),
            Verdict::Deny { policy } => format!(
                "rbac_access_denied_matched_policy[{}]",
                policy.as_deref().unwrap_or("none")
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

/// A field a rule tests, with its negated form.
#[derive(Debug, Clone, Default)]
struct Field<T> {
    values: T,
    not_values: T,
}

#[derive(Debug, Clone, Default)]
struct CompiledSource {
    principals: Field<StrList>,
    request_principals: Field<StrList>,
    namespaces: Field<StrList>,
    ip_blocks: Field<IpList>,
    remote_ip_blocks: Field<IpList>,
}

#[derive(Debug, Clone, Default)]
struct CompiledOperation {
    hosts: Field<StrList>,
    ports: Field<PortList>,
    methods: Field<StrList>,
    paths: Field<StrList>,
}

#[derive(Debug, Clone)]
enum Key {
    Header(http::HeaderName),
    SourceIp,
    RemoteIp,
    DestinationIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationPort,
    Sni,
    /// `request.auth.*`: needs JWT, never present here.
    RequestAuth,
    /// A key this proxy does not know (fails closed).
    Unsupported,
}

#[derive(Debug, Clone)]
struct CompiledCondition {
    key: Key,
    strs: Field<StrList>,
    ips: Field<IpList>,
    ports: Field<PortList>,
}

#[derive(Debug, Clone, Default)]
struct CompiledRule {
    from: Vec<CompiledSource>,
    to: Vec<CompiledOperation>,
    when: Vec<CompiledCondition>,
    /// A value could not be compiled: the rule fails closed.
    broken: bool,
}

#[derive(Debug, Clone)]
struct Policy {
    namespace: String,
    name: String,
    action: Action,
    rules: Vec<CompiledRule>,
}

/// The compiled policies of one workload.
#[derive(Debug, Clone, Default)]
pub struct Authz {
    policies: Vec<Policy>,
    has_allow: bool,
    /// Problems found while compiling, one line each (logged by the caller).
    pub warnings: Vec<String>,
}

fn strs(v: &[String], nv: &[String]) -> Field<StrList> {
    Field {
        values: StrList::parse(v),
        not_values: StrList::parse(nv),
    }
}

fn ips(v: &[String], nv: &[String], warn: &mut Vec<String>, at: &str) -> Field<IpList> {
    let mut one = |l: &[String]| {
        IpList::parse(l).unwrap_or_else(|e| {
            warn.push(format!("{at}: {e}; the rule fails closed"));
            // An unparsable block matches nothing: ALLOW loses the rule, and a
            // DENY loses nothing it could have matched reliably.
            IpList(vec![])
        })
    };
    Field {
        values: one(v),
        not_values: one(nv),
    }
}

fn source(s: &Source, warn: &mut Vec<String>, at: &str) -> CompiledSource {
    CompiledSource {
        principals: strs(&s.principals, &s.not_principals),
        request_principals: strs(&s.request_principals, &s.not_request_principals),
        namespaces: strs(&s.namespaces, &s.not_namespaces),
        ip_blocks: ips(&s.ip_blocks, &s.not_ip_blocks, warn, at),
        remote_ip_blocks: ips(&s.remote_ip_blocks, &s.not_remote_ip_blocks, warn, at),
    }
}

fn operation(o: &Operation) -> CompiledOperation {
    CompiledOperation {
        hosts: Field {
            values: StrList::parse_lower(&o.hosts),
            not_values: StrList::parse_lower(&o.not_hosts),
        },
        ports: Field {
            values: PortList::parse(&o.ports),
            not_values: PortList::parse(&o.not_ports),
        },
        methods: strs(&o.methods, &o.not_methods),
        paths: strs(&o.paths, &o.not_paths),
    }
}

fn condition(c: &Condition, warn: &mut Vec<String>, at: &str) -> CompiledCondition {
    let key = match c.key.as_str() {
        "source.ip" => Key::SourceIp,
        "remote.ip" => Key::RemoteIp,
        "destination.ip" => Key::DestinationIp,
        "source.namespace" => Key::SourceNamespace,
        "source.principal" => Key::SourcePrincipal,
        "destination.port" => Key::DestinationPort,
        "connection.sni" => Key::Sni,
        k if k.starts_with("request.auth.") => Key::RequestAuth,
        k => match k
            .strip_prefix("request.headers[")
            .and_then(|r| r.strip_suffix(']'))
            .map(|h| http::HeaderName::from_bytes(h.as_bytes()))
        {
            Some(Ok(h)) => Key::Header(h),
            _ => {
                warn.push(format!(
                    "{at}: condition key {k:?} is not supported; the rule fails closed"
                ));
                Key::Unsupported
            }
        },
    };
    let ip_key = matches!(key, Key::SourceIp | Key::RemoteIp | Key::DestinationIp);
    CompiledCondition {
        strs: strs(&c.values, &c.not_values),
        ips: if ip_key {
            ips(&c.values, &c.not_values, warn, at)
        } else {
            Field::default()
        },
        ports: Field {
            values: PortList::parse(&c.values),
            not_values: PortList::parse(&c.not_values),
        },
        key,
    }
}

impl Authz {
    /// Compiles the policies of a view (`namespace/name` → spec).
    pub fn compile<'a>(
        policies: impl IntoIterator<Item = (&'a String, &'a AuthorizationPolicySpec)>,
    ) -> Authz {
        let mut out = Authz::default();
        for (key, spec) in policies {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key.as_str()));
            if spec.extra.contains_key("targetRef") || spec.extra.contains_key("targetRefs") {
                out.warnings.push(format!(
                    "AuthorizationPolicy {key}: targetRef(s) attach it to gateways/waypoints, not sidecars; skipped"
                ));
                continue;
            }
            let action = match spec.action.as_deref().unwrap_or("ALLOW") {
                "ALLOW" => Action::Allow,
                "DENY" => Action::Deny,
                "AUDIT" => Action::Audit,
                "CUSTOM" => {
                    out.warnings.push(format!(
                        "AuthorizationPolicy {key}: action CUSTOM (provider {:?}) needs an external authorizer, which mesh-proxy does not support; requests matching it are denied",
                        spec.provider.as_ref().map(|p| p.name.as_str()).unwrap_or("")
                    ));
                    Action::Custom
                }
                other => {
                    // The agent rejects unknown actions; if one gets here, deny what it matches.
                    out.warnings.push(format!(
                        "AuthorizationPolicy {key}: unknown action {other:?}; treated as DENY"
                    ));
                    Action::Deny
                }
            };
            let mut rules = Vec::with_capacity(spec.rules.len());
            for (i, r) in spec.rules.iter().enumerate() {
                let at = format!("AuthorizationPolicy {key} rules[{i}]");
                let before = out.warnings.len();
                let mut rule = CompiledRule {
                    from: r
                        .from
                        .iter()
                        .map(|f| source(&f.source, &mut out.warnings, &at))
                        .collect(),
                    to: r.to.iter().map(|t| operation(&t.operation)).collect(),
                    when: r
                        .when
                        .iter()
                        .map(|c| condition(c, &mut out.warnings, &at))
                        .collect(),
                    broken: false,
                };
                rule.broken = out.warnings.len() > before;
                rules.push(rule);
            }
            out.has_allow |= action == Action::Allow;
            out.policies.push(Policy {
                namespace: namespace.to_string(),
                name: name.to_string(),
                action,
                rules,
            });
        }
        out
    }

    /// Whether any policy applies (else every request is allowed without work).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Decides one request (or TCP connection when `facts.http` is `None`).
    pub fn evaluate(&self, facts: &Facts<'_>) -> Verdict {
        if self.policies.is_empty() {
            return Verdict::Allow { audited: false };
        }
        for action in [Action::Custom, Action::Deny] {
            for p in self.policies.iter().filter(|p| p.action == action) {
                if let Some(i) = p.rules.iter().position(|r| r.matches(facts, true)) {
                    return Verdict::Deny {
                        policy: Some(format!("ns[{}]-policy[{}]-rule[{i}]", p.namespace, p.name)),
                    };
                }
            }
        }
        let audited = self
            .policies
            .iter()
            .filter(|p| p.action == Action::Audit)
            .any(|p| p.rules.iter().any(|r| r.matches(facts, true)));
        if self.has_allow
            && !self
                .policies
                .iter()
                .filter(|p| p.action == Action::Allow)
                .any(|p| p.rules.iter().any(|r| r.matches(facts, false)))
        {
            return Verdict::Deny { policy: None };
        }
        Verdict::Allow { audited }
    }
}

/// Matches a positive/negative pair over an optional value: the positive list
/// (if any) must match, the negative list (if any) must not.
fn pair(f: &Field<StrList>, v: Option<&str>) -> bool {
    (f.values.is_empty() || f.values.matches(v))
        && (f.not_values.is_empty() || !f.not_values.matches(v))
}

fn ip_pair(f: &Field<IpList>, ip: IpAddr) -> bool {
    (f.values.is_empty() || f.values.matches(ip))
        && (f.not_values.is_empty() || !f.not_values.matches(ip))
}

fn port_pair(f: &Field<PortList>, p: u16) -> bool {
    (f.values.is_empty() || f.values.matches(p))
        && (f.not_values.is_empty() || !f.not_values.matches(p))
}

fn is_set<T: Emptiable>(f: &Field<T>) -> bool {
    !f.values.is_empty_list() || !f.not_values.is_empty_list()
}

trait Emptiable {
    fn is_empty_list(&self) -> bool;
}
impl Emptiable for StrList {
    fn is_empty_list(&self) -> bool {
        self.is_empty()
    }
}

impl CompiledRule {
    /// `lenient`: how a field this context cannot evaluate (HTTP-only on TCP,
    /// unsupported) counts: ignored (`true`, DENY/AUDIT/CUSTOM) or failing
    /// (`false`, ALLOW).
    fn matches(&self, f: &Facts<'_>, lenient: bool) -> bool {
        if self.broken && !lenient {
            return false;
        }
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(f, lenient)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(f, lenient)))
            && self.when.iter().all(|c| c.matches(f, lenient))
    }
}

impl CompiledSource {
    fn matches(&self, f: &Facts<'_>, lenient: bool) -> bool {
        let http_ok = if is_set(&self.request_principals) {
            // JWT principals are never present (no RequestAuthentication yet);
            // on TCP the field is HTTP-only.
            if f.http.is_none() {
                lenient
            } else {
                pair(&self.request_principals, None)
            }
        } else {
            true
        };
        http_ok
            && pair(&self.principals, f.principal)
            && pair(&self.namespaces, f.namespace)
            && ip_pair(&self.ip_blocks, f.source_ip)
            && ip_pair(&self.remote_ip_blocks, f.remote_ip)
    }
}

impl CompiledOperation {
    fn matches(&self, f: &Facts<'_>, lenient: bool) -> bool {
        if !port_pair(&self.ports, f.destination_port) {
            return false;
        }
        let uses_http = is_set(&self.hosts) || is_set(&self.methods) || is_set(&self.paths);
        match &f.http {
            None => !uses_http || lenient,
            Some(h) => {
                pair(&self.methods, Some(h.method))
                    && pair(&self.paths, Some(h.path))
                    && host_pair(&self.hosts, h.host)
            }
        }
    }
}

/// Hosts compare case-insensitively, with or without the authority's port.
fn host_pair(f: &Field<StrList>, host: &str) -> bool {
    let full = host.to_ascii_lowercase();
    let bare = strip_port(&full);
    let any = |l: &StrList| l.matches(Some(&full)) || l.matches(Some(bare));
    (f.values.is_empty() || any(&f.values)) && (f.not_values.is_empty() || !any(&f.not_values))
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; anything else unchanged.
fn strip_port(a: &str) -> &str {
    match a.rsplit_once(':') {
        Some((h, p))
            if p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => a,
    }
}

impl CompiledCondition {
    fn matches(&self, f: &Facts<'_>, lenient: bool) -> bool {
        match &self.key {
            Key::SourceIp => ip_pair(&self.ips, f.source_ip),
            Key::RemoteIp => ip_pair(&self.ips, f.remote_ip),
            Key::DestinationIp => ip_pair(&self.ips, f.destination_ip),
            Key::SourceNamespace => pair(&self.strs, f.namespace),
            Key::SourcePrincipal => pair(&self.strs, f.principal),
            Key::DestinationPort => port_pair(&self.ports, f.destination_port),
            Key::Sni => pair(&self.strs, f.sni),
            Key::RequestAuth => match f.http {
                None => lenient,
                Some(_) => pair(&self.strs, None),
            },
            Key::Header(name) => match &f.http {
                None => lenient,
                Some(h) => {
                    let mut vals = h
                        .headers
                        .get_all(name)
                        .iter()
                        .filter_map(|v| v.to_str().ok());
                    match (vals.next(), vals.next()) {
                        (None, _) => pair(&self.strs, None),
                        (Some(one), None) => pair(&self.strs, Some(one)),
                        // Repeated headers are joined with commas, as Envoy does.
                        (Some(a), Some(b)) => {
                            let mut joined = format!("{a},{b}");
                            for v in vals {
                                joined.push(',');
                                joined.push_str(v);
                            }
                            pair(&self.strs, Some(&joined))
                        }
                    }
                }
            },
            Key::Unsupported => lenient,
        }
    }
}
