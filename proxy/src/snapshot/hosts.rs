//! Host names as clients write them: the short names cluster DNS allows for a
//! service, and an HTTP authority's host and port. Plain string work, apart
//! from the indexes it feeds.

use mesh_api::syncapi::Service as ViewService;

pub(super) fn split_authority(a: &str) -> (&str, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[') {
        // [v6]:port
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, p.parse().ok());
        }
        return (rest.trim_end_matches(']'), None);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (a, None),
    }
}

/// Names a pod in `namespace` can use for a Kubernetes service, as cluster DNS
/// search paths allow: `name`, `name.ns`, `name.ns.svc`.
pub(super) fn short_names(svc: &ViewService, namespace: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = svc.hostname.split('.').collect();
    if parts.len() >= 3 && parts[2] == "svc" {
        let (name, ns) = (parts[0], parts[1]);
        out.push(format!("{name}.{ns}"));
        out.push(format!("{name}.{ns}.svc"));
        if ns == namespace {
            out.push(name.to_string());
        }
    }
    out
}
