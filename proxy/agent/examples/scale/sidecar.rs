//! Phase 5, a real sidecar's RSS: the release `mesh-proxy` (on loopback,
//! ports of its own) against a 100-service mesh and against the full mesh,
//! `SIDECAR_RUNS` starts of each interleaved; medians of its VmRSS and of
//! the anonymous part (RssAnon) once ready, as rows and JSON of the report.

use crate::feed::{Feed, Shape, SourceArg};
use crate::procs::{http_get, release_bin, rss_mib, status_kib, word, Proc, SETTLE};
use crate::stats::Row;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts of the real sidecar per mesh size in phase 5 (medians reported).
const SIDECAR_RUNS: usize = 3;

/// One start's figures.
struct SidecarRss {
    rss_mib: f64,
    /// The anonymous part (heap, stacks): what the view costs, without the
    /// binary's file pages, whose resident share varies by ±0.4 MiB between
    /// two starts of the same binary.
    anon_mib: f64,
    services_in_view: usize,
    ready_in: Duration,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real mesh-proxy (pod `scale-proxy` in ns-0) against `agent`: its VmRSS
/// once it has applied a view, and how many services that view has.
fn sidecar_rss(agent: &str, log: &Path) -> SidecarRss {
    // Ports of its own on loopback: no capture is needed to hold a view.
    let ports: Vec<String> = (0..6).map(|_| free_port().to_string()).collect();
    let mut cmd = Command::new(release_bin("mesh-proxy"));
    cmd.args([
        "--agent",
        agent,
        "--pod",
        "scale-proxy",
        "--namespace",
        "ns-0",
    ])
    .args(["--bind", "127.0.0.1", "--instance-ip", "127.0.0.1"])
    .args(["--outbound-port", &ports[0], "--inbound-port", &ports[1]])
    .args(["--admin-port", &ports[2], "--health-port", &ports[3]])
    .args(["--prometheus-port", &ports[4], "--status-port", &ports[5]])
    .env("PROXY_LOG", "warn");
    let t = Instant::now();
    let mut p = Proc::spawn("mesh-proxy", cmd, log);
    let line = p.wait_line("mesh-proxy bound", Duration::from_secs(60), log);
    let admin = word(&line, "admin=");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if matches!(http_get(&admin, "/ready"), Ok((200, _))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mesh-proxy not ready (no view applied) within 120s; its log: {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready_in = t.elapsed();
    std::thread::sleep(SETTLE);
    // Before the dump: rendering a view as JSON grows the heap by several
    // MiB that glibc keeps, which is the admin page's cost, not the view's.
    let rss = rss_mib(p.pid());
    let anon = status_kib(p.pid(), "RssAnon:") / 1024.0;
    let (_, dump) = http_get(&admin, "/config_dump").expect("config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("config_dump JSON");
    let services_in_view = dump["view"]["services"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    p.kill();
    SidecarRss {
        rss_mib: rss,
        anon_mib: anon,
        services_in_view,
        ready_in,
    }
}

/// Runs phase 5 against `agent` (the full mesh's sync address); a second
/// agent serves the 100-service mesh from a directory under `root`.
pub fn run(
    root: &Path,
    agent: &str,
    services: usize,
    rows: &mut Vec<Row>,
    report: &mut serde_json::Value,
) {
    let small_dir = root.join("small");
    std::fs::create_dir(&small_dir).unwrap();
    let small_feed = Feed::new(
        SourceArg::Files,
        &small_dir,
        Shape {
            services: 100,
            namespaces: 100,
            vs: 10,
        },
    );
    println!(
        "[5] mesh-proxy against a 100-service mesh (100 namespaces, 1 each) and the {}-service mesh, {SIDECAR_RUNS} starts each, interleaved ...",
        services
    );
    let small_log = root.join("agent-small.log");
    let small = small_feed.start_agent("127.0.0.1:0", &small_log);
    let proxy_log = root.join("proxy.log");
    // Interleaved starts, medians: one start's resident binary pages vary
    // more than the difference being measured.
    let (mut runs_a, mut runs_b) = (Vec::new(), Vec::new());
    for run in 1..=SIDECAR_RUNS {
        let a = sidecar_rss(&small.sync, &proxy_log);
        let b = sidecar_rss(agent, &proxy_log);
        println!(
            "[5]   start {run}/{SIDECAR_RUNS}: 100-service mesh {} services in view, ready after {:.2}s, RSS {:.2} MiB (anon {:.2}); {}-service mesh {} in view, ready after {:.2}s, RSS {:.2} MiB (anon {:.2})",
            a.services_in_view,
            a.ready_in.as_secs_f64(),
            a.rss_mib,
            a.anon_mib,
            services,
            b.services_in_view,
            b.ready_in.as_secs_f64(),
            b.rss_mib,
            b.anon_mib
        );
        runs_a.push(a);
        runs_b.push(b);
    }
    drop(small);
    let med = |v: &[SidecarRss], f: fn(&SidecarRss) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (a, b) = (&runs_a[0], &runs_b[0]);
    let (rss_a, rss_b) = (med(&runs_a, |r| r.rss_mib), med(&runs_b, |r| r.rss_mib));
    let (anon_a, anon_b) = (med(&runs_a, |r| r.anon_mib), med(&runs_b, |r| r.anon_mib));
    println!(
        "[5] medians of {SIDECAR_RUNS}: RSS {rss_a:.2} -> {rss_b:.2} MiB ({:+.2}), anonymous {anon_a:.2} -> {anon_b:.2} MiB ({:+.2})",
        rss_b - rss_a,
        anon_b - anon_a
    );
    let bin = release_bin("mesh-proxy");
    let bin_mb = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    rows.push((
        "sidecar binary".into(),
        format!("{bin_mb:.1} MB ({})", bin.display()),
        String::new(),
    ));
    rows.push((
        "sidecar RSS, 100-service mesh".into(),
        format!(
            "{rss_a:.2} MiB, anonymous {anon_a:.2} ({} services in view; median of {SIDECAR_RUNS})",
            a.services_in_view
        ),
        String::new(),
    ));
    rows.push((
        format!("sidecar RSS, {}-service mesh", services),
        format!(
            "{rss_b:.2} MiB, anonymous {anon_b:.2} ({} services in view; median of {SIDECAR_RUNS})",
            b.services_in_view
        ),
        String::new(),
    ));
    rows.push((
        "sidecar RSS growth".into(),
        format!(
            "{:+.2} MiB (anonymous {:+.2})",
            rss_b - rss_a,
            anon_b - anon_a
        ),
        "<= 1 MiB from 100 to 10,000 services (issue 19)".into(),
    ));
    let runs = |v: &[SidecarRss]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|r| json!({"rss_mib": r.rss_mib, "anon_mib": r.anon_mib, "ready_s": r.ready_in.as_secs_f64()}))
            .collect()
    };
    report.as_object_mut().unwrap().insert("sidecar".into(), json!({
        "binary_mb": bin_mb,
        "mesh_100": {"rss_mib": rss_a, "anon_mib": anon_a, "services_in_view": a.services_in_view, "runs": runs(&runs_a)},
        "mesh_full": {"services": services, "rss_mib": rss_b, "anon_mib": anon_b, "services_in_view": b.services_in_view, "runs": runs(&runs_b)},
        "growth_mib": rss_b - rss_a,
        "anon_growth_mib": anon_b - anon_a,
    }));
}
