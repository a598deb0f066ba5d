//! Where a route attaches: resolving one parentRef to the listeners (or, for mesh
//! routes, the Service) it binds to, honouring `sectionName`, `port`,
//! `allowedRoutes` (namespaces and kinds) and the hostname intersection; or the
//! reason it does not attach (NoMatchingParent, NotAllowedByListeners,
//! NoMatchingListenerHostname).

use super::ctx::Ctx;
use super::gateways::Gateways;
use super::selector::selects;
use mesh_api::gatewayapi::gateway::FromNamespaces;
use mesh_api::gatewayapi::{self as gw, reason, ParentReference, GATEWAY_KEY_KIND};
use mesh_api::resource::ResourceKey;

/// One place a route's rules apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// `<ns>/<generated Istio Gateway>` or `mesh`.
    pub binding: String,
    /// VirtualService hosts (the intersection of route and listener hostnames).
    pub hosts: Vec<String>,
    /// A port every match must carry (sectionName/port narrowed the listeners,
    /// or a mesh parentRef named a Service port).
    pub port: Option<i32>,
    /// VirtualService exportTo (`.` for mesh consumer routes).
    pub export_to: Vec<String>,
    /// (gateway namespace, name, listener index) for attached-route counts.
    pub listener: Option<(String, String, usize)>,
}

/// The outcome for one parentRef.
#[derive(Debug, Clone, PartialEq)]
pub enum Parent {
    /// Another controller's Gateway: no status entry from us.
    NotOurs,
    Rejected(&'static str, String),
    Attached(Vec<Attachment>),
}

/// Resolves parentRef `p` of a route of `kind` in `route_ns` with `hostnames`.
pub fn resolve(
    ctx: &Ctx<'_>,
    gws: &Gateways,
    kind: &str,
    route_ns: &str,
    hostnames: &[String],
    p: &ParentReference,
) -> Parent {
    let pns = p.namespace.clone().unwrap_or_else(|| route_ns.to_string());
    if p.is_service() {
        if ctx.service(&pns, &p.name).is_none() {
            return Parent::Rejected(
                reason::NO_MATCHING_PARENT,
                format!("parent Service {pns}/{} not found", p.name),
            );
        }
        return Parent::Attached(vec![Attachment {
            binding: "mesh".into(),
            hosts: vec![ctx.service_host(&pns, &p.name)],
            port: p.port,
            // GEP-1294: a consumer route (other namespace) applies to its own namespace only.
            export_to: if pns == route_ns {
                vec![]
            } else {
                vec![".".into()]
            },
            listener: None,
        }]);
    }
    if p.group != gw::GROUP || p.kind != "Gateway" {
        return Parent::Rejected(
            reason::NO_MATCHING_PARENT,
            format!("unsupported parent {}/{}", p.group, p.kind),
        );
    }
    let Some(g) = gws.get(&(pns.clone(), p.name.clone())) else {
        let key = ResourceKey {
            kind: GATEWAY_KEY_KIND.into(),
            namespace: pns.clone(),
            name: p.name.clone(),
        };
        return match ctx.store.objects.get(&key).map(|e| &*e.object) {
            Some(crate::objects::KubeObject::GatewayApi(gw::GatewayApiResource::Gateway(x)))
                if !super::ctx::class_is_ours(ctx, &x.spec.gateway_class_name) =>
            {
                Parent::NotOurs
            }
            Some(_) => Parent::Rejected(
                reason::NO_MATCHING_PARENT,
                format!("parent Gateway {pns}/{} is not valid", p.name),
            ),
            None => Parent::Rejected(
                reason::NO_MATCHING_PARENT,
                format!("parent Gateway {pns}/{} not found", p.name),
            ),
        };
    };
    let narrowed = p.section_name.is_some() || p.port.is_some();
    let candidates: Vec<usize> = (0..g.listeners.len())
        .filter(|&i| {
            let l = &g.listeners[i];
            p.section_name.as_ref().is_none_or(|s| *s == l.name)
                && p.port.is_none_or(|port| port == l.port)
        })
        .collect();
    if candidates.is_empty() {
        return Parent::Rejected(
            reason::NO_MATCHING_PARENT,
            format!(
                "no listener of Gateway {pns}/{} matches sectionName {:?} port {:?}",
                p.name, p.section_name, p.port
            ),
        );
    }
    let ns_labels = ctx
        .namespace(route_ns)
        .and_then(|n| n.metadata.labels.as_ref());
    let allowed: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| {
            let l = &g.listeners[i];
            l.usable
                && l.kinds.iter().any(|k| k == kind)
                && match l.allowed.namespaces.from {
                    FromNamespaces::Same => route_ns == g.namespace,
                    FromNamespaces::All => true,
                    FromNamespaces::Selector => {
                        selects(l.allowed.namespaces.selector.as_ref(), ns_labels)
                    }
                }
        })
        .collect();
    if allowed.is_empty() {
        return Parent::Rejected(
            reason::NOT_ALLOWED_BY_LISTENERS,
            format!(
                "no listener of Gateway {pns}/{} allows a {kind} from namespace {route_ns}",
                p.name
            ),
        );
    }
    let mut out = Vec::new();
    for i in allowed {
        let l = &g.listeners[i];
        let hosts = if kind == "TCPRoute" {
            vec!["*".to_string()]
        } else {
            intersect(hostnames, l.hostname.as_deref())
        };
        if hosts.is_empty() {
            continue;
        }
        out.push(Attachment {
            binding: g.binding.clone(),
            hosts,
            port: narrowed.then_some(l.port),
            export_to: vec![],
            listener: Some((g.namespace.clone(), g.name.clone(), i)),
        });
    }
    if out.is_empty() {
        return Parent::Rejected(
            reason::NO_MATCHING_LISTENER_HOSTNAME,
            format!(
                "no hostname of the route matches a listener of Gateway {pns}/{}",
                p.name
            ),
        );
    }
    Parent::Attached(out)
}

/// Does hostname pattern `pattern` (`*.x` or exact) cover `host`?
fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

/// Route hostnames ∩ listener hostname: the more specific of each matching
/// pair; `*` when both are absent.
pub fn intersect(route: &[String], listener: Option<&str>) -> Vec<String> {
    match (route.is_empty(), listener) {
        (true, None) => vec!["*".into()],
        (true, Some(l)) => vec![l.to_string()],
        (false, None) => route.to_vec(),
        (false, Some(l)) => {
            let mut v: Vec<String> = Vec::new();
            for r in route {
                let h = if covers(l, r) {
                    r.clone()
                } else if covers(r, l) {
                    l.to_string()
                } else {
                    continue;
                };
                if !v.contains(&h) {
                    v.push(h);
                }
            }
            v
        }
    }
}
