//! `mesh-cni redirect` and `mesh-cni validate` in real network namespaces with real
//! iptables (nft and legacy): the rules land, a second run replaces rather than
//! duplicates, TPROXY routing is set up once, and the capture actually redirects.

mod common;

use common::{bin, Netns};

const INJECTED: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "-o",
    "5432",
    "--ipv6",
    "--redirect-dns",
    "--dns-servers-v4",
    "10.96.0.10",
    "--drop-invalid",
];

fn redirect(ns: &Netns, backend: &str, flags: &[&str]) {
    let mut args = vec![bin(), "redirect", "--iptables-backend", backend];
    args.extend(flags);
    ns.exec_ok(&args);
}

fn idempotent(backend: &str) {
    let ns = Netns::new(&format!("idem-{backend}"));
    redirect(&ns, backend, INJECTED);
    let (v4, v6) = (ns.save(backend, false), ns.save(backend, true));
    assert!(
        v4.contains(":ISTIO_OUTPUT -") && v4.contains("-A OUTPUT -j ISTIO_OUTPUT"),
        "{v4}"
    );
    assert!(
        v4.contains("ISTIO_OUTPUT_DNS") && v6.contains(":ISTIO_OUTPUT -"),
        "{v6}"
    );
    assert!(v4.contains("--ctstate INVALID -j ISTIO_DROP"), "{v4}");
    // As many rules per chain as the builder produced.
    let params = mesh_cni::flags::parse(
        &INJECTED.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        |_| None,
    )
    .unwrap()
    .params;
    let set = mesh_cni::rules::build(&params);
    let expected: usize = set
        .v4
        .tables
        .iter()
        .map(|(_, t)| t.all_rules().count())
        .sum();
    assert_eq!(
        v4.lines().filter(|l| l.starts_with("-A ")).count(),
        expected,
        "{v4}"
    );

    redirect(&ns, backend, INJECTED);
    assert_eq!(
        ns.save(backend, false),
        v4,
        "second run changed the IPv4 rules"
    );
    assert_eq!(
        ns.save(backend, true),
        v6,
        "second run changed the IPv6 rules"
    );

    // A run with other parameters replaces the chains and jumps of the first (stale
    // chains are deleted), then going back gives exactly the original rules again.
    redirect(
        &ns,
        backend,
        &[
            "-i",
            "10.0.0.0/8",
            "-b",
            "8080",
            "-m",
            "TPROXY",
            "-c",
            "eth7",
        ],
    );
    let other = ns.save(backend, false);
    assert!(
        !other.contains("ISTIO_DROP") && !other.contains("ISTIO_OUTPUT_DNS"),
        "{other}"
    );
    assert!(other.contains("-A PREROUTING -i eth7 -j RETURN"), "{other}");
    assert!(other.contains("CONNMARK --restore-mark"), "{other}");
    assert!(ns.exec_ok(&["ip", "rule", "show"]).contains("lookup 133"));
    redirect(&ns, backend, INJECTED);
    assert_eq!(
        ns.save(backend, false),
        v4,
        "going back did not restore the rules"
    );
    assert!(!ns.exec_ok(&["ip", "rule", "show"]).contains("lookup 133"));
}

#[test]
fn redirect_is_idempotent_nft() {
    idempotent("nft");
}

#[test]
fn redirect_is_idempotent_legacy() {
    idempotent("legacy");
}

#[test]
fn tproxy_sets_up_policy_routing_once() {
    let ns = Netns::new("tproxy");
    for _ in 0..2 {
        redirect(
            &ns,
            "nft",
            &["-m", "TPROXY", "-b", "*", "-i", "*", "--ipv6"],
        );
    }
    let rules = ns.exec_ok(&["ip", "rule", "show"]);
    assert_eq!(
        rules.matches("fwmark 0x539 lookup 133").count(),
        1,
        "{rules}"
    );
    let rules6 = ns.exec_ok(&["ip", "-6", "rule", "show"]);
    assert_eq!(
        rules6.matches("fwmark 0x539 lookup 133").count(),
        1,
        "{rules6}"
    );
    let routes = ns.exec_ok(&["ip", "route", "show", "table", "133"]);
    assert!(routes.contains("local default dev lo"), "{routes}");
    let v4 = ns.save("nft", false);
    assert!(v4.contains("TPROXY --on-port 15006"), "{v4}");
}

#[test]
fn validate_passes_only_when_traffic_is_captured() {
    let ns = Netns::new("validate").with_uplink();
    let validate = |uid: &str| {
        ns.exec(&[
            "setpriv",
            "--reuid",
            uid,
            "--regid",
            uid,
            "--clear-groups",
            bin(),
            "validate",
            "--timeout-ms",
            "1500",
        ])
    };
    for uid in ["1000", "1337"] {
        let before = validate(uid);
        assert_eq!(before.status.code(), Some(126), "{before:?}");
        assert!(String::from_utf8_lossy(&before.stderr).contains("not redirected"));
    }

    redirect(&ns, "nft", &["-i", "*", "-b", "*", "-d", "15020"]);
    let after = validate("1000");
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    // As the proxy's UID (how the injector runs istio-validation) the probe
    // goes through the loopback-to-inbound rule instead.
    let proxy = validate("1337");
    assert!(
        proxy.status.success(),
        "{}",
        String::from_utf8_lossy(&proxy.stderr)
    );
    assert!(String::from_utf8_lossy(&proxy.stderr).contains("to port 15006"));
}

#[test]
fn auto_backend_follows_the_nat_table_in_use() {
    for (used, other) in [("legacy", "nft"), ("nft", "legacy")] {
        let ns = Netns::new(&format!("detect-{used}"));
        // The "host" already has NAT rules in one backend (as kube-proxy would).
        ns.exec_ok(&[
            &format!("iptables-{used}"),
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "10.0.0.0/8",
            "-j",
            "MASQUERADE",
        ]);
        redirect(&ns, "auto", &["-i", "*"]);
        assert!(
            ns.save(used, false).contains("ISTIO_OUTPUT"),
            "rules not in {used}"
        );
        assert!(
            !ns.save(other, false).contains("ISTIO_OUTPUT"),
            "rules went to {other}"
        );
    }
}

#[test]
fn a_failure_part_way_leaves_nothing_half_written() {
    // IPv6 disabled: the IPv6 TPROXY route is refused after both rule sets and the
    // IPv4 routing were written; all of it must be rolled back.
    let ns = Netns::new("rollback");
    for k in ["all", "default", "lo"] {
        ns.exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{k}.disable_ipv6=1"),
        ]);
    }
    let out = ns.exec(&[
        bin(),
        "redirect",
        "--iptables-backend",
        "nft",
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-i",
        "*",
        "--ipv6",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ipv6 route add local default dev lo table 133"),
        "{err}"
    );
    assert!(
        !ns.save("nft", false).contains("ISTIO"),
        "IPv4 rules left behind"
    );
    assert!(
        !ns.save("nft", true).contains("ISTIO"),
        "IPv6 rules left behind"
    );
    assert!(!ns.exec_ok(&["ip", "rule", "show"]).contains("lookup 133"));
}
