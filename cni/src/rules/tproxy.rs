//! TPROXY mode's mangle rules: connection marks so replies and the proxy's own
//! loopback traffic are routed back correctly, and the early returns in ISTIO_INBOUND.

use super::builder::Builder;

pub(super) fn tproxy_marks(
    b: &mut Builder,
    uids: &[String],
    gids: &[String],
    loopback: &str,
    passthrough: &str,
    mark: &str,
    outbound_mark: &str,
) {
    b.append(
        "mangle",
        "PREROUTING",
        &[
            "-p",
            "tcp",
            "-m",
            "mark",
            "--mark",
            mark,
            "-j",
            "CONNMARK",
            "--save-mark",
        ],
    );
    b.append(
        "mangle",
        "OUTPUT",
        &[
            "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN",
        ],
    );
    for (ids, flag) in [(uids, "--uid-owner"), (gids, "--gid-owner")] {
        for id in ids {
            b.append(
                "mangle",
                "OUTPUT",
                &[
                    "!",
                    "-d",
                    loopback,
                    "-p",
                    "tcp",
                    "-o",
                    "lo",
                    "-m",
                    "owner",
                    flag,
                    id,
                    "-j",
                    "MARK",
                    "--set-mark",
                    outbound_mark,
                ],
            );
        }
    }
    b.append(
        "mangle",
        "OUTPUT",
        &[
            "-p",
            "tcp",
            "-m",
            "connmark",
            "--mark",
            mark,
            "-j",
            "CONNMARK",
            "--restore-mark",
        ],
    );
    b.insert(
        "mangle",
        "ISTIO_INBOUND",
        1,
        &["-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN"],
    );
    b.insert(
        "mangle",
        "ISTIO_INBOUND",
        2,
        &["-p", "tcp", "-s", passthrough, "-i", "lo", "-j", "RETURN"],
    );
    b.insert(
        "mangle",
        "ISTIO_INBOUND",
        3,
        &[
            "-p",
            "tcp",
            "-i",
            "lo",
            "-m",
            "mark",
            "!",
            "--mark",
            outbound_mark,
            "-j",
            "RETURN",
        ],
    );
}
