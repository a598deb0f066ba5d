//! Parsing and validating the flags: the config source (view file, agent,
//! config folder), timeouts and limits, the CA root bundle, on-demand idling.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct T {
    #[command(flatten)]
    a: Args,
}

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    let mut v = vec!["t"];
    v.extend_from_slice(args);
    T::parse_from(v).a.validate()
}

#[test]
fn a_router_subscribes_as_one() {
    let mut c = parse(&["--view-file", "/x"]).unwrap();
    assert!(!c.identity().router);
    c.mode = Mode::Router;
    assert!(c.identity().router);
}

#[test]
fn validates() {
    let c = parse(&[
        "--view-file",
        "/x",
        "--labels",
        "app=r,version=v1",
        "--pod",
        "reviews-v1-0",
    ])
    .unwrap();
    assert_eq!(c.labels["version"], "v1");
    assert_eq!(c.workload_name, "reviews-v1");
    assert_eq!(c.admin.ip().to_string(), "127.0.0.1");
    assert!(matches!(parse(&[]), Err(ConfigError::NoSource)));
    let e = parse(&["--view-file", "/x", "--admin-port", "15001"]).unwrap_err();
    assert!(e.to_string().contains("15001"), "{e}");
    let e = parse(&["--view-file", "/x", "--drain-grace", "soon"]).unwrap_err();
    assert!(e.to_string().contains("soon"), "{e}");
    assert!(parse(&["--view-file", "/x", "--labels", "novalue"]).is_err());
    let c = parse(&["--view-file", "/x", "--labels", r#"{"app":"x"}"#]).unwrap();
    assert_eq!(c.labels["app"], "x");
    let e = parse(&["--view-file", "/x", "--local-rate-limit", "fast"]).unwrap_err();
    assert!(e.to_string().contains("fast"), "{e}");
    let e = parse(&["--view-file", "/x", "--path-normalization", "LOOSE"]).unwrap_err();
    assert!(e.to_string().contains("LOOSE"), "{e}");
    let c = parse(&["--view-file", "/x", "--local-rate-limit", "5/s"]).unwrap();
    assert_eq!(c.rate_limits.len(), 1);
    assert_eq!(c.cpu_policy, crate::sched::CpuPolicy::Adaptive);
    let c = parse(&["--view-file", "/x", "--cpu-policy", "normal"]).unwrap();
    assert_eq!(c.cpu_policy, crate::sched::CpuPolicy::Normal);
    let e = parse(&["--view-file", "/x", "--cpu-policy", "fifo"]).unwrap_err();
    assert!(e.to_string().contains("\"fifo\""), "{e}");
}

#[test]
fn config_dir_needs_the_embedded_agent() {
    let dir = || Some(PathBuf::from("/cfg"));
    // A build without the feature refuses the folder, naming it and both ways out.
    let e = pick_source(None, dir(), None, false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::NoEmbeddedAgent(_)), "{e}");
    assert!(
        msg.contains("/cfg") && msg.contains("--agent") && msg.contains("embedded-agent"),
        "{msg}"
    );
    // Even with --agent given too: the folder was asked for, so say it cannot be had.
    assert!(pick_source(None, dir(), Some("a:1".into()), false).is_err());
    // The other sources need no agent in the binary.
    assert_eq!(
        pick_source(None, None, Some("a:1".into()), false).unwrap(),
        Source::Agent("a:1".into())
    );
    assert_eq!(
        pick_source(Some("/v".into()), dir(), None, false).unwrap(),
        Source::ViewFile("/v".into())
    );
    assert_eq!(
        pick_source(None, dir(), None, true).unwrap(),
        Source::ConfigDir("/cfg".into())
    );
    // Test builds carry the feature (the self dev-dependency in Cargo.toml).
    assert!(matches!(
        parse(&["--config-dir", "/cfg"]).unwrap().source,
        Source::ConfigDir(_)
    ));
}

#[test]
fn connection_limits() {
    let c = parse(&["--view-file", "/x"]).unwrap();
    assert_eq!(c.first_byte_timeout, Duration::from_secs(15));
    assert_eq!(c.http_idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.tcp_idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.max_connections_per_listener, 10_000);
    for (flag, bad) in [
        ("--http-first-byte-timeout", "0s"),
        ("--http-idle-timeout", "forever"),
        ("--tcp-idle-timeout", "0"),
        ("--max-connections-per-listener", "0"),
    ] {
        let e = parse(&["--view-file", "/x", flag, bad]).unwrap_err();
        assert!(
            e.to_string().contains(&flag[2..]) && e.to_string().contains(bad),
            "{e}"
        );
    }
}

#[test]
fn ca_token_needs_a_root_bundle() {
    // The default bundle path does not exist here: the error names it.
    let e = parse(&[
        "--view-file",
        "/x",
        "--ca-token-file",
        "/t",
        "--ca-addr",
        "a:1",
    ])
    .unwrap_err();
    assert!(
        e.to_string().contains(mesh_api::identity::CA_ROOT_PATH) && e.to_string().contains("/t"),
        "{e}"
    );
    let e = parse(&["--agent", "a:1", "--ca-root-file", "/no/such/roots.pem"]).unwrap_err();
    assert!(e.to_string().contains("/no/such/roots.pem"), "{e}");
    // No token, no bundle: plaintext config stream (an agent without CA).
    let c = parse(&["--agent", "a:1"]).unwrap();
    assert_eq!(
        c.agent_transport,
        mesh_api::syncclient::Transport::Plaintext
    );
    let dir = std::env::temp_dir().join(format!("roots-{}.pem", std::process::id()));
    let ca = mesh_agent::ca::Ca::self_signed("cluster.local", Duration::from_secs(60)).unwrap();
    ca.publish(&dir).unwrap();
    let c = parse(&["--agent", "a:1", "--ca-root-file", dir.to_str().unwrap()]).unwrap();
    assert!(matches!(
        c.agent_transport,
        mesh_api::syncclient::Transport::Tls { .. }
    ));
    let _ = std::fs::remove_file(dir);
}

#[test]
fn on_demand_idle() {
    use mesh_api::syncidle::IdlePolicy;
    let c = parse(&["--agent", "a:1"]).unwrap();
    assert_eq!(c.on_demand_idle, Some(IdlePolicy::default()));
    let c = parse(&[
        "--agent",
        "a:1",
        "--on-demand-idle",
        "2s",
        "--on-demand-sweep",
        "500ms",
    ])
    .unwrap();
    assert_eq!(
        c.on_demand_idle,
        Some(IdlePolicy {
            ttl: Duration::from_secs(2),
            sweep: Duration::from_millis(500)
        })
    );
    assert_eq!(
        parse(&["--agent", "a:1", "--on-demand-idle", "0"])
            .unwrap()
            .on_demand_idle,
        None
    );
    let e = parse(&["--agent", "a:1", "--on-demand-idle", "soon"]).unwrap_err();
    assert!(
        e.to_string().contains("--on-demand-idle") && e.to_string().contains("soon"),
        "{e}"
    );
    let e = parse(&["--agent", "a:1", "--on-demand-sweep", "0s"]).unwrap_err();
    assert!(e.to_string().contains("--on-demand-sweep \"0s\""), "{e}");
}

#[test]
fn durations() {
    assert_eq!(
        parse_duration("f", "250ms").unwrap(),
        Duration::from_millis(250)
    );
    assert_eq!(parse_duration("f", "2").unwrap(), Duration::from_secs(2));
    assert!(parse_duration("f", "-1s").is_err());
    assert_eq!(
        parse_duration("f", "1m30s").unwrap(),
        Duration::from_secs(90)
    );
    assert_eq!(
        workload_from_pod("productpage-v1-6b746f74dc-9stvs"),
        "productpage-v1"
    );
}
