//! Value matchers of AuthorizationPolicy fields, compiled once per view: Istio's
//! string forms (`exact`, `prefix*`, `*suffix`, `*` = present) and IP blocks
//! (an address or a CIDR).

use std::net::IpAddr;

use ipnet::IpNet;

/// One string pattern as Istio writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any value, as long as the attribute is present.
    Present,
}

impl StrMatch {
    /// `*` → present, `abc*` → prefix, `*abc` → suffix, else exact.
    pub fn parse(v: &str) -> StrMatch {
        if v == "*" {
            StrMatch::Present
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.to_string())
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.to_string())
        } else {
            StrMatch::Exact(v.to_string())
        }
    }

    /// Like [`StrMatch::parse`], with the pattern lower-cased (for hosts).
    pub fn parse_lower(v: &str) -> StrMatch {
        StrMatch::parse(&v.to_ascii_lowercase())
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Suffix(s) => v.ends_with(s.as_str()),
            StrMatch::Present => true,
        }
    }
}

/// A list of string patterns; a value matches if any pattern does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrList(pub Vec<StrMatch>);

impl StrList {
    pub fn parse(vals: &[String]) -> StrList {
        StrList(vals.iter().map(|v| StrMatch::parse(v)).collect())
    }
    pub fn parse_lower(vals: &[String]) -> StrList {
        StrList(vals.iter().map(|v| StrMatch::parse_lower(v)).collect())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// An absent attribute matches nothing (not even `*`).
    pub fn matches(&self, v: Option<&str>) -> bool {
        v.is_some_and(|v| self.0.iter().any(|m| m.matches(v)))
    }
}

/// A list of IP blocks (`10.0.0.1` or `10.0.0.0/16`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList(pub Vec<IpNet>);

/// A value that is neither an address nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block")]
pub struct BadIp(pub String);

impl IpList {
    pub fn parse(vals: &[String]) -> Result<IpList, BadIp> {
        vals.iter()
            .map(|v| {
                let v = v.trim();
                mesh_api::values::ip_net(v).map_err(|_| BadIp(v.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(IpList)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// A list of ports; entries that are not ports never match (the agent rejects them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<Option<u16>>);

impl PortList {
    pub fn parse(vals: &[String]) -> PortList {
        PortList(vals.iter().map(|v| v.trim().parse().ok()).collect())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn matches(&self, p: u16) -> bool {
        self.0.contains(&Some(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms() {
        let cases = [
            ("/admin", "/admin", true),
            ("/admin", "/admin/", false),
            ("/admin*", "/admin/x", true),
            ("/admin*", "/adm", false),
            ("*.png", "/a/b.png", true),
            ("*.png", "/a/b.jpg", false),
            ("*", "", true),
            ("*", "anything", true),
        ];
        for (pat, v, want) in cases {
            assert_eq!(StrMatch::parse(pat).matches(v), want, "{pat} vs {v}");
        }
        assert!(!StrList::parse(&["*".into()]).matches(None));
    }

    #[test]
    fn ip_blocks() {
        let l = IpList::parse(&["10.88.0.0/16".into(), "192.168.1.7".into()]).unwrap();
        assert!(l.matches("10.88.3.4".parse().unwrap()));
        assert!(l.matches("192.168.1.7".parse().unwrap()));
        assert!(!l.matches("192.168.1.8".parse().unwrap()));
        assert!(l.matches("::ffff:10.88.0.9".parse().unwrap()));
        let e = IpList::parse(&["10.0.0.0/99".into()]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/99"));
    }
}
