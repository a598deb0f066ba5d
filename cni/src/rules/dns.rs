//! DNS capture rules: TCP/UDP port 53 to the agent's DNS proxy (nat), and the raw-table
//! conntrack zones that keep the app->agent and agent->upstream UDP legs apart.

use mesh_api::RedirectParams;

use super::builder::Builder;

/// Port the agent's DNS proxy listens on.
const DNS_CAPTURE_PORT: u16 = mesh_api::ports::DNS_CAPTURE;

pub(super) fn dns(
    b: &mut Builder,
    p: &RedirectParams,
    uids: &[String],
    gids: &[String],
    servers: &[String],
) {
    let port = DNS_CAPTURE_PORT.to_string();
    if p.capture_all_dns {
        b.append("nat", "ISTIO_OUTPUT", &["-j", "ISTIO_OUTPUT_DNS"]);
        b.append(
            "nat",
            "ISTIO_OUTPUT_DNS",
            &[
                "-p",
                "tcp",
                "--dport",
                "53",
                "-j",
                "REDIRECT",
                "--to-ports",
                &port,
            ],
        );
        b.append(
            "nat",
            "ISTIO_OUTPUT_DNS",
            &[
                "-p",
                "udp",
                "--dport",
                "53",
                "-j",
                "REDIRECT",
                "--to-port",
                &port,
            ],
        );
    } else if !servers.is_empty() {
        b.append("nat", "ISTIO_OUTPUT", &["-j", "ISTIO_OUTPUT_DNS"]);
        for s in servers {
            b.append(
                "nat",
                "ISTIO_OUTPUT_DNS",
                &[
                    "-p",
                    "tcp",
                    "--dport",
                    "53",
                    "-d",
                    s,
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    &port,
                ],
            );
            b.append(
                "nat",
                "ISTIO_OUTPUT_DNS",
                &[
                    "-p",
                    "udp",
                    "--dport",
                    "53",
                    "-d",
                    s,
                    "-j",
                    "REDIRECT",
                    "--to-port",
                    &port,
                ],
            );
        }
    }

    // Conntrack zones keep the app->agent and agent->upstream legs of a UDP DNS
    // exchange apart, so NAT does not confuse them.
    b.append("raw", "OUTPUT", &["-j", "ISTIO_OUTPUT_DNS"]);
    for (ids, flag) in [(uids, "--uid-owner"), (gids, "--gid-owner")] {
        for id in ids {
            b.append(
                "raw",
                "ISTIO_OUTPUT_DNS",
                &[
                    "-p", "udp", "--dport", "53", "-m", "owner", flag, id, "-j", "CT", "--zone",
                    "1",
                ],
            );
            b.append(
                "raw",
                "ISTIO_OUTPUT_DNS",
                &[
                    "-p", "udp", "--sport", &port, "-m", "owner", flag, id, "-j", "CT", "--zone",
                    "2",
                ],
            );
        }
    }
    if p.capture_all_dns {
        b.append("raw", "PREROUTING", &["-j", "ISTIO_INBOUND"]);
        b.append(
            "raw",
            "ISTIO_OUTPUT_DNS",
            &["-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2"],
        );
        b.append(
            "raw",
            "ISTIO_INBOUND",
            &["-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1"],
        );
    } else if !servers.is_empty() {
        b.append("raw", "PREROUTING", &["-j", "ISTIO_INBOUND"]);
        for s in servers {
            b.append(
                "raw",
                "ISTIO_OUTPUT_DNS",
                &[
                    "-p", "udp", "--dport", "53", "-d", s, "-j", "CT", "--zone", "2",
                ],
            );
            b.append(
                "raw",
                "ISTIO_INBOUND",
                &[
                    "-p", "udp", "--sport", "53", "-s", s, "-j", "CT", "--zone", "1",
                ],
            );
        }
    }
}
