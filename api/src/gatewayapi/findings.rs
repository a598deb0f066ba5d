//! [`Findings`], the collector of rule violations, with the format checks
//! every kind shares. Its own file so that `validate_route` and
//! `validate_grpc` can use it without importing `validate`, which calls them.

use super::common::{BackendRef, ParentReference};
use std::collections::BTreeSet;

/// One rule violation: field path and message.
pub type Finding = (String, String);

/// Collects findings; the helpers check one format each.
#[derive(Default)]
pub(crate) struct Findings(pub(crate) Vec<Finding>);

impl Findings {
    pub(crate) fn push(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push((path.into(), msg.into()));
    }

    pub(crate) fn max_items(&mut self, path: &str, n: usize, max: usize) {
        if n > max {
            self.push(path, format!("{n} items; at most {max} are allowed"));
        }
    }

    pub(crate) fn min_items(&mut self, path: &str, n: usize, min: usize) {
        if n < min {
            self.push(path, format!("{n} items; at least {min} required"));
        }
    }

    pub(crate) fn hostnames(&mut self, path: &str, hosts: &[String]) {
        self.max_items(path, hosts.len(), 16);
        for (i, h) in hosts.iter().enumerate() {
            self.hostname(&format!("{path}[{i}]"), h, true);
        }
    }

    /// RFC 1123 hostname, no IP address; `*.` allowed only as the whole first label.
    pub(crate) fn hostname(&mut self, path: &str, h: &str, wildcard: bool) {
        let rest = match h.strip_prefix("*.") {
            Some(r) if wildcard => r,
            _ => h,
        };
        if h.parse::<std::net::IpAddr>().is_ok() {
            self.push(path, format!("{h:?}: an IP address is not a hostname"));
        } else if !is_subdomain(rest) || h.len() > 253 {
            let hint = if wildcard {
                " (a wildcard is only allowed as the leftmost label, `*.`)"
            } else {
                ""
            };
            self.push(
                path,
                format!("{h:?} is not a valid RFC 1123 hostname{hint}"),
            );
        }
    }

    pub(crate) fn object_name(&mut self, path: &str, name: &str) {
        if name.is_empty() {
            self.push(path, "name is required");
        } else if name.len() > 253 {
            self.push(path, format!("{name:?} is longer than 253 characters"));
        }
    }

    /// Listener, rule and section names: lower-case RFC 1123 subdomain.
    pub(crate) fn section_name(&mut self, path: &str, name: &str) {
        if !is_subdomain(name) || name.len() > 253 {
            self.push(
                path,
                format!("{name:?} is not a valid name (lower-case RFC 1123 subdomain)"),
            );
        }
    }

    pub(crate) fn port(&mut self, path: &str, port: i32) {
        if !(1..=65535).contains(&port) {
            self.push(path, format!("port {port} is out of range 1-65535"));
        }
    }

    pub(crate) fn namespace(&mut self, path: &str, ns: &str) {
        if !is_label(ns) || ns.len() > 63 {
            self.push(path, format!("{ns:?} is not a valid namespace name"));
        }
    }

    /// Parent references: name required, section name and port formats, at most
    /// 32, no duplicates.
    pub(crate) fn parent_refs(&mut self, path: &str, refs: &[ParentReference]) {
        self.max_items(path, refs.len(), 32);
        let mut seen = BTreeSet::new();
        for (i, p) in refs.iter().enumerate() {
            let at = format!("{path}[{i}]");
            self.object_name(&format!("{at}.name"), &p.name);
            if let Some(ns) = &p.namespace {
                self.namespace(&format!("{at}.namespace"), ns);
            }
            if let Some(s) = &p.section_name {
                self.section_name(&format!("{at}.sectionName"), s);
            }
            if let Some(port) = p.port {
                self.port(&format!("{at}.port"), port);
            }
            let id = (
                &p.group,
                &p.kind,
                &p.namespace,
                &p.name,
                &p.section_name,
                p.port,
            );
            if !seen.insert(id) {
                self.push(
                    at,
                    format!(
                        "parentRef {:?} is listed twice with the same sectionName and port",
                        p.name
                    ),
                );
            }
        }
    }

    /// A weighted backend: name, port (required for a Service), weight range.
    pub(crate) fn backend_ref(&mut self, path: &str, b: &BackendRef) {
        self.object_name(&format!("{path}.name"), &b.name);
        if let Some(ns) = &b.namespace {
            self.namespace(&format!("{path}.namespace"), ns);
        }
        match b.port {
            Some(p) => self.port(&format!("{path}.port"), p),
            None if b.is_service() => self.push(
                format!("{path}.port"),
                format!("backend Service {:?} needs a port", b.name),
            ),
            None => {}
        }
        if !(0..=1_000_000).contains(&b.weight) {
            self.push(
                format!("{path}.weight"),
                format!("weight {} is out of range 0-1000000", b.weight),
            );
        }
    }
}

/// One DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Dot-separated labels (RFC 1123 subdomain, lower case).
pub(crate) fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_label)
}
