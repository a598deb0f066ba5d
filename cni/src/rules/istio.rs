//! The rules themselves, in the order and form Istio's `istio-iptables` writes them:
//! exclusions, the redirect chains, inbound capture (REDIRECT or TPROXY), the outbound
//! chain with its UID/GID, loopback, DNS and CIDR rules, and TPROXY's mark handling.

use ipnet::IpNet;
use mesh_api::{InterceptionMode, RedirectParams, Selection};

use super::builder::Builder;
use super::model::{Family, FamilyRules};

fn is_loopback(net: &IpNet) -> bool {
    net.addr().is_loopback()
}

fn nets_of(nets: &[IpNet], f: Family) -> Vec<String> {
    nets.iter()
        .filter(|n| {
            matches!(
                (n, f),
                (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6)
            )
        })
        .map(ToString::to_string)
        .collect()
}

/// Istio writes IPv4-compatible IPv6 addresses (`::a.b.c.d`) in dotted form.
fn v6_text(a: &std::net::Ipv6Addr) -> String {
    let s = a.segments();
    if s[..6].iter().all(|x| *x == 0) && (s[6] != 0 || s[7] > 1) {
        let [_, _, _, _, _, _, _, _, _, _, _, _, a1, a2, a3, a4] = a.octets();
        return format!("::{a1}.{a2}.{a3}.{a4}");
    }
    a.to_string()
}

pub(super) fn build_family(p: &RedirectParams, f: Family) -> FamilyRules {
    let mut b = Builder { tables: Vec::new() };
    let tproxy = p.interception_mode == InterceptionMode::Tproxy;
    let (loopback, passthrough) = match f {
        Family::V4 => (
            p.host_ipv4_loopback_cidr.to_string(),
            "127.0.0.6/32".to_string(),
        ),
        Family::V6 => ("::1/128".to_string(), "::6/128".to_string()),
    };
    let dns_v4: Vec<String> = p.dns_servers_v4.iter().map(|a| format!("{a}/32")).collect();
    let dns_v6: Vec<String> = p
        .dns_servers_v6
        .iter()
        .map(|a| format!("{}/128", v6_text(a)))
        .collect();
    let dns_servers = if f == Family::V4 { &dns_v4 } else { &dns_v6 };
    // DNS capture needs something to capture: servers, or all port-53 traffic.
    let redirect_dns =
        p.redirect_dns && (p.capture_all_dns || !dns_v4.is_empty() || !dns_v6.is_empty());
    let mark = p.tproxy_mark.to_string();
    let outbound_mark = (p.tproxy_mark + 1).to_string();
    let tunnel = p.inbound_tunnel_port.to_string();
    let uids: Vec<String> = p.proxy_uids.iter().map(ToString::to_string).collect();
    let gids: Vec<String> = p.proxy_gids.iter().map(ToString::to_string).collect();

    // Interfaces whose inbound traffic is really outbound (KubeVirt) skip inbound capture.
    for nic in &p.reroute_virtual_interfaces {
        b.insert("nat", "PREROUTING", 1, &["-i", nic, "-j", "RETURN"]);
    }
    if p.drop_invalid {
        b.append(
            "mangle",
            "PREROUTING",
            &[
                "-m",
                "conntrack",
                "--ctstate",
                "INVALID",
                "-j",
                "ISTIO_DROP",
            ],
        );
        b.append("mangle", "ISTIO_DROP", &["-j", "DROP"]);
    }
    for nic in &p.exclude_interfaces {
        if tproxy {
            b.append("mangle", "PREROUTING", &["-i", nic, "-j", "RETURN"]);
            b.append("mangle", "OUTPUT", &["-o", nic, "-j", "RETURN"]);
        }
        b.append("nat", "PREROUTING", &["-i", nic, "-j", "RETURN"]);
        b.append("nat", "OUTPUT", &["-o", nic, "-j", "RETURN"]);
    }

    b.append(
        "nat",
        "ISTIO_INBOUND",
        &["-p", "tcp", "--dport", &tunnel, "-j", "RETURN"],
    );
    let proxy_port = p.proxy_port.to_string();
    let inbound_port = p.inbound_capture_port.to_string();
    b.append(
        "nat",
        "ISTIO_REDIRECT",
        &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &proxy_port],
    );
    b.append(
        "nat",
        "ISTIO_IN_REDIRECT",
        &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound_port],
    );

    inbound(&mut b, p, tproxy, &loopback, &mark);

    b.append("nat", "OUTPUT", &["-j", "ISTIO_OUTPUT"]);
    for port in &p.outbound_ports_exclude {
        let port = port.to_string();
        for proto in ["tcp", "udp"] {
            b.append(
                "nat",
                "ISTIO_OUTPUT",
                &["-p", proto, "--dport", &port, "-j", "RETURN"],
            );
        }
    }
    b.append(
        "nat",
        "ISTIO_OUTPUT",
        &["-o", "lo", "-s", &passthrough, "-j", "RETURN"],
    );

    let include = match &p.outbound_ip_ranges_include {
        Selection::Only(v) => v.clone(),
        _ => Vec::new(),
    };
    let include_has_loopback = include.iter().any(is_loopback);
    let dns_ports = format!("53,{tunnel}");
    for (ids, flag) in [(&uids, "--uid-owner"), (&gids, "--gid-owner")] {
        for id in ids {
            // DNS to a local server must reach the agent, so port 53 is exempt here;
            // Istio only does this for the UID rules.
            if redirect_dns && flag == "--uid-owner" {
                b.append(
                    "nat",
                    "ISTIO_OUTPUT",
                    &[
                        "-o",
                        "lo",
                        "!",
                        "-d",
                        &loopback,
                        "-p",
                        "tcp",
                        "-m",
                        "multiport",
                        "!",
                        "--dports",
                        &dns_ports,
                        "-m",
                        "owner",
                        flag,
                        id,
                        "-j",
                        "ISTIO_IN_REDIRECT",
                    ],
                );
            } else {
                b.append(
                    "nat",
                    "ISTIO_OUTPUT",
                    &[
                        "-o",
                        "lo",
                        "!",
                        "-d",
                        &loopback,
                        "-p",
                        "tcp",
                        "!",
                        "--dport",
                        &tunnel,
                        "-m",
                        "owner",
                        flag,
                        id,
                        "-j",
                        "ISTIO_IN_REDIRECT",
                    ],
                );
            }
            if !include_has_loopback {
                if redirect_dns {
                    b.append(
                        "nat",
                        "ISTIO_OUTPUT",
                        &[
                            "-o", "lo", "-p", "tcp", "!", "--dport", "53", "-m", "owner", "!",
                            flag, id, "-j", "RETURN",
                        ],
                    );
                } else {
                    b.append(
                        "nat",
                        "ISTIO_OUTPUT",
                        &["-o", "lo", "-m", "owner", "!", flag, id, "-j", "RETURN"],
                    );
                }
            }
            b.append(
                "nat",
                "ISTIO_OUTPUT",
                &["-m", "owner", flag, id, "-j", "RETURN"],
            );
        }
    }

    owner_groups(&mut b, p);

    if redirect_dns {
        super::dns::dns(&mut b, p, &uids, &gids, dns_servers);
    }

    b.append("nat", "ISTIO_OUTPUT", &["-d", &loopback, "-j", "RETURN"]);
    for cidr in nets_of(&p.outbound_ip_ranges_exclude, f) {
        b.append("nat", "ISTIO_OUTPUT", &["-d", &cidr, "-j", "RETURN"]);
    }
    for port in &p.outbound_ports_include {
        b.append(
            "nat",
            "ISTIO_OUTPUT",
            &[
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-j",
                "ISTIO_REDIRECT",
            ],
        );
    }
    match &p.outbound_ip_ranges_include {
        Selection::All => {
            b.append("nat", "ISTIO_OUTPUT", &["-j", "ISTIO_REDIRECT"]);
            for nic in &p.reroute_virtual_interfaces {
                b.insert("nat", "PREROUTING", 1, &["-i", nic, "-j", "ISTIO_REDIRECT"]);
            }
        }
        Selection::Only(_) => {
            for cidr in nets_of(&include, f) {
                for nic in &p.reroute_virtual_interfaces {
                    b.insert(
                        "nat",
                        "PREROUTING",
                        1,
                        &["-i", nic, "-d", &cidr, "-j", "ISTIO_REDIRECT"],
                    );
                }
                b.append(
                    "nat",
                    "ISTIO_OUTPUT",
                    &["-d", &cidr, "-j", "ISTIO_REDIRECT"],
                );
            }
        }
        Selection::None => {}
    }

    if tproxy {
        super::tproxy::tproxy_marks(
            &mut b,
            &uids,
            &gids,
            &loopback,
            &passthrough,
            &mark,
            &outbound_mark,
        );
    }
    b.finish(f)
}

fn inbound(b: &mut Builder, p: &RedirectParams, tproxy: bool, loopback: &str, mark: &str) {
    if p.inbound_ports_include.is_none() {
        return;
    }
    let table = if tproxy { "mangle" } else { "nat" };
    if tproxy {
        b.append(
            "mangle",
            "ISTIO_DIVERT",
            &["-j", "MARK", "--set-mark", mark],
        );
        b.append("mangle", "ISTIO_DIVERT", &["-j", "ACCEPT"]);
        let tmark = format!("{mark}/0xffffffff");
        let port = p.inbound_capture_port.to_string();
        b.append(
            "mangle",
            "ISTIO_TPROXY",
            &[
                "!",
                "-d",
                loopback,
                "-p",
                "tcp",
                "-j",
                "TPROXY",
                "--tproxy-mark",
                &tmark,
                "--on-port",
                &port,
            ],
        );
    }
    b.append(table, "PREROUTING", &["-p", "tcp", "-j", "ISTIO_INBOUND"]);
    let established = [
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ISTIO_DIVERT",
    ];
    match &p.inbound_ports_include {
        Selection::All => {
            for port in &p.inbound_ports_exclude {
                b.append(
                    table,
                    "ISTIO_INBOUND",
                    &["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"],
                );
            }
            if tproxy {
                let mut a = vec!["-p", "tcp"];
                a.extend(established);
                b.append("mangle", "ISTIO_INBOUND", &a);
                b.append(
                    "mangle",
                    "ISTIO_INBOUND",
                    &["-p", "tcp", "-j", "ISTIO_TPROXY"],
                );
            } else {
                b.append(
                    "nat",
                    "ISTIO_INBOUND",
                    &["-p", "tcp", "-j", "ISTIO_IN_REDIRECT"],
                );
            }
        }
        Selection::Only(ports) => {
            for port in ports {
                let port = port.to_string();
                if tproxy {
                    let mut a = vec!["-p", "tcp", "--dport", &port];
                    a.extend(established);
                    b.append("mangle", "ISTIO_INBOUND", &a);
                    b.append(
                        "mangle",
                        "ISTIO_INBOUND",
                        &["-p", "tcp", "--dport", &port, "-j", "ISTIO_TPROXY"],
                    );
                } else {
                    b.append(
                        "nat",
                        "ISTIO_INBOUND",
                        &["-p", "tcp", "--dport", &port, "-j", "ISTIO_IN_REDIRECT"],
                    );
                }
            }
        }
        Selection::None => {}
    }
}

fn owner_groups(b: &mut Builder, p: &RedirectParams) {
    match &p.owner_groups_include {
        Selection::All => {
            for g in &p.owner_groups_exclude {
                b.append(
                    "nat",
                    "ISTIO_OUTPUT",
                    &["-m", "owner", "--gid-owner", g, "-j", "RETURN"],
                );
            }
        }
        Selection::Only(groups) if !groups.is_empty() => {
            let mut a: Vec<&str> = Vec::new();
            for g in groups {
                a.extend(["-m", "owner", "!", "--gid-owner", g]);
            }
            a.extend(["-j", "RETURN"]);
            b.append("nat", "ISTIO_OUTPUT", &a);
        }
        // Capture nobody's traffic by group: only the UID/GID exemptions apply.
        _ => {}
    }
}
