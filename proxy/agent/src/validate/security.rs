//! Single-resource checks of PeerAuthentication and AuthorizationPolicy.

use super::checks::*;
use super::report::Report;
use mesh_api::security::*;

const MTLS: [&str; 4] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];

pub fn peer_authentication(r: &mut Report<'_>, s: &PeerAuthenticationSpec) {
    if let Some(m) = &s.mtls {
        one_of(r, "spec.mtls.mode", m.mode.as_ref(), &MTLS);
    }
    if !s.port_level_mtls.is_empty()
        && s.selector
            .as_ref()
            .is_none_or(|x| x.match_labels.is_empty())
    {
        r.error(
            "spec.portLevelMtls",
            (),
            "portLevelMtls requires a workload selector",
        );
    }
    for (k, m) in &s.port_level_mtls {
        let p = format!("spec.portLevelMtls[{k}]");
        match k.parse::<u32>() {
            Ok(n) => port(r, &p, n),
            Err(_) => r.error(&p, k, "port must be a number"),
        }
        one_of(r, &format!("{p}.mode"), m.mode.as_ref(), &MTLS);
    }
}

const ACTIONS: [&str; 4] = ["ALLOW", "DENY", "AUDIT", "CUSTOM"];

pub fn authorization_policy(r: &mut Report<'_>, s: &AuthorizationPolicySpec) {
    one_of(r, "spec.action", s.action.as_ref(), &ACTIONS);
    let custom = s.action.as_deref() == Some("CUSTOM");
    if custom && s.provider.is_none() {
        r.error("spec.provider", (), "action CUSTOM needs a provider");
    }
    if !custom && s.provider.is_some() {
        r.error(
            "spec.provider",
            s.action.as_ref(),
            "provider is only allowed with action CUSTOM",
        );
    }
    for (i, rule) in s.rules.iter().enumerate() {
        let p = format!("spec.rules[{i}]");
        for (j, f) in rule.from.iter().enumerate() {
            let sp = format!("{p}.from[{j}].source");
            let src = &f.source;
            let lists = [
                ("principals", &src.principals),
                ("notPrincipals", &src.not_principals),
                ("requestPrincipals", &src.request_principals),
                ("notRequestPrincipals", &src.not_request_principals),
                ("namespaces", &src.namespaces),
                ("notNamespaces", &src.not_namespaces),
            ];
            if lists.iter().all(|(_, l)| l.is_empty())
                && [
                    &src.ip_blocks,
                    &src.not_ip_blocks,
                    &src.remote_ip_blocks,
                    &src.not_remote_ip_blocks,
                ]
                .iter()
                .all(|l| l.is_empty())
            {
                r.error(&sp, (), "source must set at least one field");
            }
            for (name, l) in lists {
                for (k, v) in l.iter().enumerate() {
                    if v.is_empty() {
                        r.error(format!("{sp}.{name}[{k}]"), v, "value must not be empty");
                    }
                }
            }
            for (name, l) in [
                ("ipBlocks", &src.ip_blocks),
                ("notIpBlocks", &src.not_ip_blocks),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
            ] {
                for (k, v) in l.iter().enumerate() {
                    cidr(r, &format!("{sp}.{name}[{k}]"), v);
                }
            }
        }
        for (j, t) in rule.to.iter().enumerate() {
            let op = format!("{p}.to[{j}].operation");
            let o = &t.operation;
            for (name, l) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
                for (k, v) in l.iter().enumerate() {
                    match v.parse::<u32>() {
                        Ok(n) => port(r, &format!("{op}.{name}[{k}]"), n),
                        Err(_) => r.error(format!("{op}.{name}[{k}]"), v, "port must be a number"),
                    }
                }
            }
            for (name, l) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
                for (k, v) in l.iter().enumerate() {
                    if !(v.starts_with('/') || v.starts_with('*') || v.ends_with('*')) {
                        r.error(
                            format!("{op}.{name}[{k}]"),
                            v,
                            "path must start with '/' or use a '*' prefix/suffix",
                        );
                    }
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            let cp = format!("{p}.when[{j}]");
            if c.key.is_empty() {
                r.error(format!("{cp}.key"), (), "condition key is required");
            }
            if c.values.is_empty() && c.not_values.is_empty() {
                r.error(&cp, &c.key, "condition needs values or notValues");
            }
            if c.key.starts_with("source.ip")
                || c.key.starts_with("remote.ip")
                || c.key == "destination.ip"
            {
                for (k, v) in c.values.iter().chain(&c.not_values).enumerate() {
                    cidr(r, &format!("{cp}.values[{k}]"), v);
                }
            }
        }
    }
}
