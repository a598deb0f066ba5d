//! Redirect parameters: everything `istio-init` (`mesh-cni redirect`) and the chained
//! CNI plugin need to write a pod's capture rules, with the same fields and flags as
//! Istio's `istio-iptables`.
//!
//! [`RedirectParams::for_pod`] derives them from a pod's annotations over the mesh
//! defaults. The injector renders them as `istio-init` arguments with
//! [`RedirectParams::to_flags`]; the CNI plugin calls the same function on the pod it
//! reads, so the two paths cannot drift apart.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::annotations::{self, sidecar, traffic, AnnotationError};
use crate::capture::join;
pub use crate::capture::{InterceptionMode, Selection};
use crate::ports;

/// Mesh-wide defaults the annotations are applied over (the `global.proxy.*` values
/// of Istio's injector, and the sidecar's UID which the injector may compute, e.g.
/// from an OpenShift namespace's UID range).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RedirectDefaults {
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub interception_mode: InterceptionMode,
    pub include_ip_ranges: Selection<IpNet>,
    pub exclude_ip_ranges: Vec<IpNet>,
    pub include_inbound_ports: Selection<u16>,
    pub exclude_inbound_ports: Vec<u16>,
    pub include_outbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub kubevirt_interfaces: Vec<String>,
    pub exclude_interfaces: Vec<String>,
    /// The sidecar's status port, excluded from inbound capture; `None` for none.
    pub status_port: Option<u16>,
    pub redirect_dns: bool,
    pub capture_all_dns: bool,
    pub drop_invalid: bool,
}

impl Default for RedirectDefaults {
    fn default() -> Self {
        RedirectDefaults {
            proxy_uid: ports::PROXY_UID,
            proxy_gid: ports::PROXY_GID,
            interception_mode: InterceptionMode::Redirect,
            include_ip_ranges: Selection::All,
            exclude_ip_ranges: Vec::new(),
            include_inbound_ports: Selection::All,
            exclude_inbound_ports: Vec::new(),
            include_outbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            kubevirt_interfaces: Vec::new(),
            exclude_interfaces: Vec::new(),
            status_port: Some(ports::STATUS),
            redirect_dns: false,
            capture_all_dns: false,
            drop_invalid: false,
        }
    }
}

/// The full parameter set of one pod's redirect rules (the fields of Istio's
/// `istio-iptables` config, typed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectParams {
    /// `-p`: outbound capture port.
    pub proxy_port: u16,
    /// `-z`: inbound capture port.
    pub inbound_capture_port: u16,
    /// `-e`: HBONE port, never captured.
    pub inbound_tunnel_port: u16,
    /// `-u`: UIDs whose traffic is never redirected.
    pub proxy_uids: Vec<u32>,
    /// `-g`: GIDs whose traffic is never redirected.
    pub proxy_gids: Vec<u32>,
    /// `-m`
    pub interception_mode: InterceptionMode,
    /// `-t`: packet mark for TPROXY.
    pub tproxy_mark: u32,
    /// `-r`: routing table for TPROXY.
    pub tproxy_route_table: u32,
    /// `-b`
    pub inbound_ports_include: Selection<u16>,
    /// `-d` (only used when `-b` is `*`).
    pub inbound_ports_exclude: Vec<u16>,
    /// `-q`
    pub outbound_ports_include: Vec<u16>,
    /// `-o`
    pub outbound_ports_exclude: Vec<u16>,
    /// `-i`
    pub outbound_ip_ranges_include: Selection<IpNet>,
    /// `-x`
    pub outbound_ip_ranges_exclude: Vec<IpNet>,
    /// `-k`: interfaces whose inbound traffic is treated as outbound.
    pub reroute_virtual_interfaces: Vec<String>,
    /// `-c`: interfaces with no capture at all.
    pub exclude_interfaces: Vec<String>,
    /// `--redirect-dns`
    pub redirect_dns: bool,
    /// `--capture-all-dns`
    pub capture_all_dns: bool,
    /// `--drop-invalid`
    pub drop_invalid: bool,
    /// Emit the IPv6 rule set too (`--ipv6`; Istio detects it from the pod's IPs).
    pub enable_ipv6: bool,
    /// `--dual-stack`
    pub dual_stack: bool,
    /// DNS servers to capture (Istio reads them from `/etc/resolv.conf`).
    pub dns_servers_v4: Vec<Ipv4Addr>,
    pub dns_servers_v6: Vec<Ipv6Addr>,
    /// Groups whose outbound traffic is captured (`ISTIO_OUTBOUND_OWNER_GROUPS`).
    pub owner_groups_include: Selection<String>,
    /// Groups excluded when the include list is `*` (`ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE`).
    pub owner_groups_exclude: Vec<String>,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`
    pub host_ipv4_loopback_cidr: Ipv4Net,
}

impl Default for RedirectParams {
    /// `istio-iptables`' own defaults: nothing captured until told what to capture.
    fn default() -> Self {
        RedirectParams {
            proxy_port: ports::OUTBOUND_CAPTURE,
            inbound_capture_port: ports::INBOUND_CAPTURE,
            inbound_tunnel_port: ports::HBONE,
            proxy_uids: vec![ports::PROXY_UID],
            proxy_gids: vec![ports::PROXY_GID],
            interception_mode: InterceptionMode::Redirect,
            tproxy_mark: 1337,
            tproxy_route_table: 133,
            inbound_ports_include: Selection::None,
            inbound_ports_exclude: Vec::new(),
            outbound_ports_include: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            outbound_ip_ranges_include: Selection::None,
            outbound_ip_ranges_exclude: Vec::new(),
            reroute_virtual_interfaces: Vec::new(),
            exclude_interfaces: Vec::new(),
            redirect_dns: false,
            capture_all_dns: false,
            drop_invalid: false,
            enable_ipv6: false,
            dual_stack: false,
            dns_servers_v4: Vec::new(),
            dns_servers_v6: Vec::new(),
            owner_groups_include: Selection::All,
            owner_groups_exclude: Vec::new(),
            host_ipv4_loopback_cidr: "127.0.0.1/32".parse().expect("static CIDR"),
        }
    }
}

impl RedirectParams {
    /// Derives a pod's redirect parameters from its annotations over the mesh
    /// defaults, exactly as Istio's injection template does: each
    /// `traffic.sidecar.istio.io/*` annotation replaces its default, and the inbound
    /// exclusions always start with 15090 and 15021 and end with the status port.
    /// Any bad annotation value is an error naming the annotation.
    pub fn for_pod(
        annotations: &BTreeMap<String, String>,
        defaults: &RedirectDefaults,
    ) -> Result<RedirectParams, AnnotationError> {
        let get = |k: &str| annotations.get(k).map(String::as_str);

        let interception_mode = match get(sidecar::INTERCEPTION_MODE) {
            Some(v) => annotations::parse_interception_mode(sidecar::INTERCEPTION_MODE, v)?,
            None => defaults.interception_mode,
        };
        let outbound_ip_ranges_include = match get(traffic::INCLUDE_OUTBOUND_IP_RANGES) {
            Some(v) => annotations::parse_cidr_selection(
                traffic::INCLUDE_OUTBOUND_IP_RANGES,
                v,
                "includeIPRanges",
            )?,
            None => defaults.include_ip_ranges.clone(),
        };
        let outbound_ip_ranges_exclude = match get(traffic::EXCLUDE_OUTBOUND_IP_RANGES) {
            Some(v) => annotations::parse_cidr_list(
                traffic::EXCLUDE_OUTBOUND_IP_RANGES,
                v,
                "excludeIPRanges",
            )?,
            None => defaults.exclude_ip_ranges.clone(),
        };
        let inbound_ports_include = match get(traffic::INCLUDE_INBOUND_PORTS) {
            Some(v) => annotations::parse_port_selection(
                traffic::INCLUDE_INBOUND_PORTS,
                v,
                "includeInboundPorts",
            )?,
            None => defaults.include_inbound_ports.clone(),
        };
        let user_excluded_inbound = match get(traffic::EXCLUDE_INBOUND_PORTS) {
            Some(v) => annotations::parse_port_list(
                traffic::EXCLUDE_INBOUND_PORTS,
                v,
                "excludeInboundPorts",
            )?,
            None => defaults.exclude_inbound_ports.clone(),
        };
        let outbound_ports_include = match get(traffic::INCLUDE_OUTBOUND_PORTS) {
            Some(v) => annotations::parse_port_list(
                traffic::INCLUDE_OUTBOUND_PORTS,
                v,
                "includeOutboundPorts",
            )?,
            None => defaults.include_outbound_ports.clone(),
        };
        let outbound_ports_exclude = match get(traffic::EXCLUDE_OUTBOUND_PORTS) {
            Some(v) => annotations::parse_port_list(
                traffic::EXCLUDE_OUTBOUND_PORTS,
                v,
                "excludeOutboundPorts",
            )?,
            None => defaults.exclude_outbound_ports.clone(),
        };
        let reroute_virtual_interfaces = match (
            get(traffic::REROUTE_VIRTUAL_INTERFACES),
            get(traffic::KUBEVIRT_INTERFACES),
        ) {
            (Some(v), _) => annotations::parse_interfaces(
                traffic::REROUTE_VIRTUAL_INTERFACES,
                v,
                "rerouteVirtualInterfaces",
            )?,
            (None, Some(v)) => annotations::parse_interfaces(
                traffic::KUBEVIRT_INTERFACES,
                v,
                "kubevirtInterfaces",
            )?,
            (None, None) => defaults.kubevirt_interfaces.clone(),
        };
        let exclude_interfaces = match get(traffic::EXCLUDE_INTERFACES) {
            Some(v) => {
                annotations::parse_interfaces(traffic::EXCLUDE_INTERFACES, v, "excludeInterfaces")?
            }
            None => defaults.exclude_interfaces.clone(),
        };
        let status_port = match get(sidecar::STATUS_PORT) {
            // Istio treats "0" as "no status port".
            Some(v) if v.trim() == "0" => None,
            Some(v) => Some(annotations::parse_port(
                sidecar::STATUS_PORT,
                v,
                "statusPort",
            )?),
            None => defaults.status_port,
        };

        let mut inbound_ports_exclude = vec![ports::PROMETHEUS, ports::HEALTH];
        inbound_ports_exclude.extend(&user_excluded_inbound);
        if let Some(sp) = status_port {
            if !user_excluded_inbound.contains(&sp) {
                inbound_ports_exclude.push(sp);
            }
        }

        Ok(RedirectParams {
            proxy_uids: vec![defaults.proxy_uid],
            proxy_gids: vec![defaults.proxy_gid],
            interception_mode,
            inbound_ports_include,
            inbound_ports_exclude,
            outbound_ports_include,
            outbound_ports_exclude,
            outbound_ip_ranges_include,
            outbound_ip_ranges_exclude,
            reroute_virtual_interfaces,
            exclude_interfaces,
            redirect_dns: defaults.redirect_dns,
            capture_all_dns: defaults.capture_all_dns,
            drop_invalid: defaults.drop_invalid,
            ..RedirectParams::default()
        })
    }

    /// Renders the parameters as `istio-iptables`-compatible flags (what the
    /// injector puts in `istio-init`'s args). Flags equal to the CLI defaults are
    /// omitted, except those Istio's template always writes (`-p -z -u -m -i -x -b -d`).
    /// Settings Istio derives at run time (`--ipv6`, DNS servers, owner groups,
    /// loopback CIDR) are written only when they differ from the defaults.
    pub fn to_flags(&self) -> Vec<String> {
        let d = RedirectParams::default();
        let mut f: Vec<String> = Vec::new();
        let mut push = |k: &str, v: String| {
            f.push(k.to_string());
            f.push(v);
        };
        push("-p", self.proxy_port.to_string());
        push("-z", self.inbound_capture_port.to_string());
        push("-u", join(&self.proxy_uids));
        if self.proxy_gids != self.proxy_uids {
            push("-g", join(&self.proxy_gids));
        }
        push("-m", self.interception_mode.to_string());
        push("-i", self.outbound_ip_ranges_include.to_string());
        push("-x", join(&self.outbound_ip_ranges_exclude));
        push("-b", self.inbound_ports_include.to_string());
        push("-d", join(&self.inbound_ports_exclude));
        if !self.outbound_ports_include.is_empty() {
            push("-q", join(&self.outbound_ports_include));
        }
        if !self.outbound_ports_exclude.is_empty() {
            push("-o", join(&self.outbound_ports_exclude));
        }
        if !self.reroute_virtual_interfaces.is_empty() {
            push("-k", self.reroute_virtual_interfaces.join(","));
        }
        if !self.exclude_interfaces.is_empty() {
            push("-c", self.exclude_interfaces.join(","));
        }
        if self.inbound_tunnel_port != d.inbound_tunnel_port {
            push("-e", self.inbound_tunnel_port.to_string());
        }
        if self.tproxy_mark != d.tproxy_mark {
            push("-t", self.tproxy_mark.to_string());
        }
        if self.tproxy_route_table != d.tproxy_route_table {
            push("-r", self.tproxy_route_table.to_string());
        }
        if !self.dns_servers_v4.is_empty() {
            push("--dns-servers-v4", join(&self.dns_servers_v4));
        }
        if !self.dns_servers_v6.is_empty() {
            push("--dns-servers-v6", join(&self.dns_servers_v6));
        }
        for (on, flag) in [
            (self.redirect_dns, "--redirect-dns"),
            (self.capture_all_dns, "--capture-all-dns"),
            (self.drop_invalid, "--drop-invalid"),
            (self.enable_ipv6, "--ipv6"),
            (self.dual_stack, "--dual-stack"),
        ] {
            if on {
                f.push(flag.to_string());
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_istio_template() {
        let p = RedirectParams::for_pod(&BTreeMap::new(), &RedirectDefaults::default()).unwrap();
        assert_eq!(
            p.to_flags().join(" "),
            "-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x  -b * -d 15090,15021,15020"
        );
    }

    #[test]
    fn annotations_override_defaults() {
        let a = ann(&[
            (
                traffic::INCLUDE_OUTBOUND_IP_RANGES,
                "127.0.0.1/24,10.96.0.1/24",
            ),
            (
                traffic::EXCLUDE_OUTBOUND_IP_RANGES,
                "10.96.0.2/24,10.96.0.3/24",
            ),
            (traffic::INCLUDE_INBOUND_PORTS, "1,2,3"),
            (traffic::EXCLUDE_INBOUND_PORTS, "4,5,6"),
            (traffic::EXCLUDE_OUTBOUND_PORTS, "7,8,9"),
        ]);
        let p = RedirectParams::for_pod(&a, &RedirectDefaults::default()).unwrap();
        assert_eq!(
            p.to_flags().join(" "),
            "-p 15001 -z 15006 -u 1337 -m REDIRECT -i 127.0.0.1/24,10.96.0.1/24 \
             -x 10.96.0.2/24,10.96.0.3/24 -b 1,2,3 -d 15090,15021,4,5,6,15020 -o 7,8,9"
        );
    }

    #[test]
    fn status_port_annotation_and_kubevirt() {
        let a = ann(&[
            (sidecar::STATUS_PORT, "123"),
            (traffic::KUBEVIRT_INTERFACES, "net1,net2"),
            (sidecar::INTERCEPTION_MODE, "TPROXY"),
        ]);
        let p = RedirectParams::for_pod(&a, &RedirectDefaults::default()).unwrap();
        assert_eq!(
            p.to_flags().join(" "),
            "-p 15001 -z 15006 -u 1337 -m TPROXY -i * -x  -b * -d 15090,15021,123 -k net1,net2"
        );
        // A status port already excluded is not repeated; "0" means none.
        let a = ann(&[
            (traffic::EXCLUDE_INBOUND_PORTS, "15020,9"),
            (sidecar::STATUS_PORT, "15020"),
        ]);
        let p = RedirectParams::for_pod(&a, &RedirectDefaults::default()).unwrap();
        assert_eq!(p.inbound_ports_exclude, vec![15090, 15021, 15020, 9]);
        let p = RedirectParams::for_pod(
            &ann(&[(sidecar::STATUS_PORT, "0")]),
            &RedirectDefaults::default(),
        )
        .unwrap();
        assert_eq!(p.inbound_ports_exclude, vec![15090, 15021]);
    }

    #[test]
    fn reroute_virtual_interfaces_wins_over_kubevirt() {
        let a = ann(&[
            (traffic::KUBEVIRT_INTERFACES, "net1"),
            (traffic::REROUTE_VIRTUAL_INTERFACES, "net2,net3"),
        ]);
        let p = RedirectParams::for_pod(&a, &RedirectDefaults::default()).unwrap();
        assert_eq!(p.reroute_virtual_interfaces, vec!["net2", "net3"]);
    }

    #[test]
    fn empty_include_means_no_capture() {
        let a = ann(&[
            (traffic::INCLUDE_OUTBOUND_IP_RANGES, ""),
            (traffic::INCLUDE_INBOUND_PORTS, ""),
        ]);
        let p = RedirectParams::for_pod(&a, &RedirectDefaults::default()).unwrap();
        assert!(p.outbound_ip_ranges_include.is_none());
        assert!(p.inbound_ports_include.is_none());
        assert!(p.to_flags().join(" ").contains("-i  -x  -b  -d"));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (k, v) in [
            (traffic::INCLUDE_OUTBOUND_IP_RANGES, "1.1.1.1/33"),
            (traffic::EXCLUDE_OUTBOUND_IP_RANGES, "*"),
            (traffic::INCLUDE_INBOUND_PORTS, "70000"),
            (traffic::EXCLUDE_INBOUND_PORTS, "*"),
            (traffic::EXCLUDE_OUTBOUND_PORTS, "bad"),
            (traffic::INCLUDE_OUTBOUND_PORTS, "0"),
            (traffic::KUBEVIRT_INTERFACES, "a/b"),
            (traffic::EXCLUDE_INTERFACES, "way-too-long-interface"),
            (sidecar::INTERCEPTION_MODE, "MAGIC"),
            (sidecar::STATUS_PORT, "99999"),
        ] {
            let e =
                RedirectParams::for_pod(&ann(&[(k, v)]), &RedirectDefaults::default()).unwrap_err();
            assert_eq!(e.key, k);
            assert!(e.to_string().contains(v), "{e}");
        }
    }

    #[test]
    fn non_default_runtime_settings_become_flags() {
        let p = RedirectParams {
            proxy_gids: vec![1, 2],
            proxy_uids: vec![3, 4],
            enable_ipv6: true,
            redirect_dns: true,
            dns_servers_v4: vec!["127.0.0.53".parse().unwrap()],
            inbound_tunnel_port: 15009,
            ..RedirectParams::default()
        };
        let f = p.to_flags().join(" ");
        assert!(f.contains("-u 3,4 -g 1,2"), "{f}");
        assert!(f.contains("-e 15009"), "{f}");
        assert!(f.contains("--dns-servers-v4 127.0.0.53"), "{f}");
        assert!(f.ends_with("--redirect-dns --ipv6"), "{f}");
    }
}
