//! Compiling VirtualServices into a [`RouteTable`], once per snapshot: every
//! value is parsed here, so a spec the proxy cannot use is a [`RouteError`]
//! before any request sees it (evaluating the result is `eval`'s part).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mesh_api::networking::{
    Destination, HttpMatchRequest, HttpRoute, StringMatch, VirtualServiceSpec,
};
use mesh_api::values::{self, ValueError};

use super::types::{Fault, L4Route, MatchEntry, Matcher, Retry, Route, Target};

/// Why a VirtualService cannot be compiled: the field and the value's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {error}")]
pub struct RouteError {
    /// Field path within the spec, e.g. `http[0].match[1].uri`.
    pub path: String,
    pub error: ValueError,
}

fn at(path: impl Into<String>) -> impl FnOnce(ValueError) -> RouteError {
    let path = path.into();
    move |error| RouteError { path, error }
}

/// Per host (FQDN or wildcard pattern), the routes of the VirtualService for it.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// `tcp` and `tls` routes per host, in order (tls first, as Envoy's filter
    /// chain match on SNI comes before the catch-all).
    pub l4: HashMap<String, Arc<Vec<L4Route>>>,
    exact: HashMap<String, Arc<Vec<Route>>>,
    /// `*.example.com` patterns, as suffixes (`.example.com`).
    wildcard: Vec<(String, Arc<Vec<Route>>)>,
    /// VirtualServices that cannot be compiled (`namespace/name` and why). A
    /// snapshot with any is refused whole (see `Snapshot::compile`).
    pub errors: Vec<(String, RouteError)>,
}

/// Istio resolves a short host relative to the resource's namespace.
pub fn fqdn(host: &str, ns: &str, domain: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{ns}.svc.{domain}")
    }
}

/// An optional duration field, parsed by the shared parser.
fn opt_duration(d: Option<&str>, path: String) -> Result<Option<Duration>, RouteError> {
    d.map(values::duration).transpose().map_err(at(path))
}

fn compile_match(m: &HttpMatchRequest, p: &str) -> Result<MatchEntry, RouteError> {
    let ic = m.ignore_uri_case.unwrap_or(false);
    let opt = |x: &Option<StringMatch>, ic, f: &str| {
        x.as_ref()
            .map(|s| Matcher::compile(s, ic).map_err(at(format!("{p}.{f}"))))
            .transpose()
    };
    let list = |x: &BTreeMap<String, StringMatch>, f: &str, lower: bool| {
        x.iter()
            .map(|(k, v)| {
                let name = if lower {
                    k.to_ascii_lowercase()
                } else {
                    k.clone()
                };
                let m = Matcher::compile(v, false).map_err(at(format!("{p}.{f}.{k}")))?;
                Ok((name, m))
            })
            .collect::<Result<Vec<_>, RouteError>>()
    };
    Ok(MatchEntry {
        uri: opt(&m.uri, ic, "uri")?,
        ignore_uri_case: ic,
        scheme: opt(&m.scheme, false, "scheme")?,
        method: opt(&m.method, false, "method")?,
        authority: opt(&m.authority, false, "authority")?,
        headers: list(&m.headers, "headers", true)?,
        without_headers: list(&m.without_headers, "withoutHeaders", true)?,
        query: list(&m.query_params, "queryParams", false)?,
        port: m.port.and_then(|p| u16::try_from(p).ok()),
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
        gateways: m.gateways.clone(),
    })
}

fn percent(p: &Option<mesh_api::networking::Percent>, legacy: Option<i32>) -> f64 {
    p.as_ref()
        .map(|p| p.value)
        .or(legacy.map(f64::from))
        .unwrap_or(100.0)
}

fn target(d: &Destination, ns: &str, domain: &str) -> (String, Option<String>, Option<u16>) {
    (
        fqdn(&d.host, ns, domain),
        d.subset.clone(),
        d.port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok()),
    )
}

fn compile_route(
    h: &HttpRoute,
    p: &str,
    ns: &str,
    vs: &Arc<str>,
    domain: &str,
) -> Result<Route, RouteError> {
    let matches = h
        .match_
        .iter()
        .enumerate()
        .map(|(j, m)| compile_match(m, &format!("{p}.match[{j}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let single = h.route.len() == 1;
    let targets = h
        .route
        .iter()
        .map(|r| {
            let (host, subset, port) = target(&r.destination, ns, domain);
            Target {
                host,
                subset,
                port,
                weight: r
                    .weight
                    .map(|w| w.max(0) as u32)
                    .unwrap_or(if single { 100 } else { 0 }),
                headers: r.headers.as_ref().and_then(|h| h.request.clone()),
            }
        })
        .collect();
    let fault = match &h.fault {
        None => None,
        Some(f) => {
            let delay = match &f.delay {
                Some(d) => opt_duration(
                    d.fixed_delay.as_deref(),
                    format!("{p}.fault.delay.fixedDelay"),
                )?
                .map(|t| (t, percent(&d.percentage, d.percent))),
                None => None,
            };
            Some(Fault {
                delay,
                abort_http: f.abort.as_ref().and_then(|a| {
                    Some((
                        u16::try_from(a.http_status?).ok()?,
                        percent(&a.percentage, None),
                    ))
                }),
                abort_grpc: f
                    .abort
                    .as_ref()
                    .and_then(|a| Some((a.grpc_status.clone()?, percent(&a.percentage, None)))),
            })
        }
    };
    let retries = match &h.retries {
        None => None,
        Some(r) => Some(Retry {
            attempts: r.attempts.max(0) as u32,
            per_try_timeout: opt_duration(
                r.per_try_timeout.as_deref(),
                format!("{p}.retries.perTryTimeout"),
            )?,
            retry_on: r
                .retry_on
                .as_deref()
                .unwrap_or(
                    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                )
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
        }),
    };
    let mirror = h.mirror.as_ref().map(|m| {
        let (host, subset, port) = target(m, ns, domain);
        (host, subset, port, percent(&h.mirror_percentage, None))
    });
    let cors_origins = h
        .cors_policy
        .iter()
        .flat_map(|c| c.allow_origins.iter().enumerate())
        .map(|(k, o)| {
            Matcher::compile(o, false).map_err(at(format!("{p}.corsPolicy.allowOrigins[{k}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cors_max_age = opt_duration(
        h.cors_policy.as_ref().and_then(|c| c.max_age.as_deref()),
        format!("{p}.corsPolicy.maxAge"),
    )?;
    let rewrite_regex = h
        .rewrite
        .as_ref()
        .and_then(|r| r.uri_regex_rewrite.as_ref())
        .map(|rr| values::regex(&rr.match_).map(|re| (re, rr.rewrite.replace("\\", "$"))))
        .transpose()
        .map_err(at(format!("{p}.rewrite.uriRegexRewrite.match")))?;
    let timeout = opt_duration(h.timeout.as_deref(), format!("{p}.timeout"))?;
    Ok(Route {
        name: h.name.clone(),
        vs: vs.clone(),
        matches,
        targets,
        redirect: h.redirect.clone(),
        direct_response: h.direct_response.as_ref().map(|d| {
            (
                u16::try_from(d.status).unwrap_or(500),
                d.body
                    .as_ref()
                    .and_then(|b| b.string.clone())
                    .unwrap_or_default(),
            )
        }),
        rewrite: h.rewrite.clone(),
        rewrite_regex,
        // Zero means "no timeout", as in Envoy.
        timeout: timeout.filter(|d| !d.is_zero()),
        retries,
        fault,
        mirror,
        cors: h.cors_policy.clone(),
        cors_origins,
        cors_max_age,
        headers: h.headers.clone(),
    })
}

fn l4_targets(
    route: &[mesh_api::networking::RouteDestination],
    ns: &str,
    domain: &str,
) -> Vec<Target> {
    let single = route.len() == 1;
    route
        .iter()
        .map(|r| {
            let (host, subset, port) = target(&r.destination, ns, domain);
            Target {
                host,
                subset,
                port,
                weight: r
                    .weight
                    .map(|w| w.max(0) as u32)
                    .unwrap_or(if single { 100 } else { 0 }),
                headers: None,
            }
        })
        .collect()
}

fn compile_l4(vs: &VirtualServiceSpec, ns: &str, domain: &str) -> Result<Vec<L4Route>, RouteError> {
    // A subnet that does not parse must not be dropped: an empty list matches
    // every destination.
    let nets = |v: &[String], p: String| {
        v.iter()
            .enumerate()
            .map(|(k, s)| values::ip_net(s).map_err(at(format!("{p}.destinationSubnets[{k}]"))))
            .collect::<Result<Vec<ipnet::IpNet>, _>>()
    };
    let entry = |port: Option<u32>,
                 subnets: Vec<ipnet::IpNet>,
                 labels: &BTreeMap<String, String>,
                 source_ns: &Option<String>,
                 sni: Vec<String>,
                 targets: &[Target]| L4Route {
        ports: port
            .and_then(|p| u16::try_from(p).ok())
            .into_iter()
            .collect(),
        subnets,
        source_labels: labels.clone(),
        source_namespace: source_ns.clone(),
        sni,
        has_match: true,
        targets: targets.to_vec(),
    };
    let mut out = Vec::new();
    for (i, r) in vs.tls.iter().enumerate() {
        let targets = l4_targets(&r.route, ns, domain);
        for (j, m) in r.match_.iter().enumerate() {
            let sni = m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
            out.push(entry(
                m.port,
                nets(&m.destination_subnets, format!("tls[{i}].match[{j}]"))?,
                &m.source_labels,
                &m.source_namespace,
                sni,
                &targets,
            ));
        }
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        let targets = l4_targets(&r.route, ns, domain);
        if r.match_.is_empty() {
            let mut any = entry(None, Vec::new(), &BTreeMap::new(), &None, vec![], &targets);
            any.has_match = false;
            out.push(any);
        }
        for (j, m) in r.match_.iter().enumerate() {
            out.push(entry(
                m.port,
                nets(&m.destination_subnets, format!("tcp[{i}].match[{j}]"))?,
                &m.source_labels,
                &m.source_namespace,
                vec![],
                &targets,
            ));
        }
    }
    Ok(out)
}

impl RouteTable {
    /// Compiles the view's VirtualServices (keyed `namespace/name`) that bind to
    /// the mesh (sidecars); any that cannot be compiled is listed in `errors`.
    pub fn compile(vss: &BTreeMap<String, VirtualServiceSpec>, domain: &str) -> RouteTable {
        let mut t = RouteTable::default();
        for (key, vs) in vss {
            let binds_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
            if !binds_mesh {
                continue;
            }
            let ns = key.split('/').next().unwrap_or("default");
            let (routes, l4) = match RouteTable::compile_vs(key, vs, domain) {
                Ok((r, l4)) => (r, l4),
                Err(e) => {
                    t.errors.push((key.clone(), e));
                    continue;
                }
            };
            if !l4.is_empty() {
                let l4 = Arc::new(l4);
                for h in &vs.hosts {
                    t.l4.entry(fqdn(h, ns, domain))
                        .or_insert_with(|| l4.clone());
                }
            }
            for h in &vs.hosts {
                let h = fqdn(h, ns, domain);
                if let Some(suffix) = h.strip_prefix('*') {
                    t.wildcard.push((suffix.to_string(), routes.clone()));
                } else {
                    // Istio merges by first writer; keep the first.
                    t.exact.entry(h).or_insert_with(|| routes.clone());
                }
            }
        }
        // Longest wildcard suffix first.
        t.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        t
    }

    /// One VirtualService (`namespace/name` = `key`) compiled: its `http`
    /// routes and its `tls`/`tcp` routes. The sidecar table above and a
    /// gateway's per-server tables (the `gateway` module) are both built from it.
    pub fn compile_vs(
        key: &str,
        vs: &VirtualServiceSpec,
        domain: &str,
    ) -> Result<(Arc<Vec<Route>>, Vec<L4Route>), RouteError> {
        let ns = key.split('/').next().unwrap_or("default");
        let vs_name: Arc<str> = Arc::from(key);
        let routes = vs
            .http
            .iter()
            .enumerate()
            .map(|(i, h)| compile_route(h, &format!("http[{i}]"), ns, &vs_name, domain))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((Arc::new(routes), compile_l4(vs, ns, domain)?))
    }

    /// The routes for a service host, if a VirtualService covers it.
    pub fn for_host(&self, host: &str) -> Option<&Arc<Vec<Route>>> {
        self.exact.get(host).or_else(|| {
            self.wildcard
                .iter()
                .find(|(s, _)| host.ends_with(s.as_str()))
                .map(|(_, r)| r)
        })
    }
}
