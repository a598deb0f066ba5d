//! Scale benchmark (issue 19), run by hand (not a test):
//!
//! ```text
//! cargo build --release -p mesh-agent --bin mesh-agent --example scale
//! cargo build --release -p mesh-proxy --bin mesh-proxy
//! target/release/examples/scale
//! target/release/examples/scale --out scale.json   # + JSON report
//! target/release/examples/scale --proxies 1000 --services 2000 --changes 20
//! target/release/examples/scale --source kubernetes   # through kube-rs watches
//! ```
//!
//! It raises its own open-file limit (soft up to the hard limit; every proxy
//! is one socket here and one in the agent); if the hard limit is too low it
//! says so: run `ulimit -n 65536` as root first.
//!
//! Mesh: `--services` (10,000) Services in `--namespaces` (100) namespaces
//! `ns-0`.., each with an EndpointSlice of 10 ready endpoints, plus
//! `--virtual-services` (1,000) VirtualServices and as many DestinationRules
//! (bench.rs's shapes), served by the real `target/release/mesh-agent`
//! (default flags: on-demand visibility) from YAML in a temp dir
//! (`--source files`, the default: its `--config-dir`) or from the in-process
//! fake Kubernetes API server (`--source kubernetes`: its kube-rs watches;
//! proxies then use its plaintext config-only port); see `feed`. Proxies: `--proxies` (5,000) sync clients (`spawn_client`, the
//! library the sidecar uses), in-process tasks on one tokio runtime over
//! loopback TCP: proxy `i` is pod `p-i` in namespace `ns-{i % namespaces}`,
//! and once synced it looks up `--lookups` (3) services of other namespaces.
//!
//! Phases, each printing what it does and its result:
//! 1. startup: every proxy's first view, then the lookups answered;
//! 2. the agent's CPU seconds (utime+stime) and VmRSS at rest after connect,
//!    after the lookups and after the change series;
//! 3. `--changes` (50) EndpointSlice changes, one at a time (a different
//!    service each time, a new marker endpoint IP): for every affected proxy
//!    (its view holds that service) the time from the file write to its apply
//!    callback seeing the marker; p50/p99/max, agent CPU and view bytes
//!    (`/metrics`) per change; the agent's CPU at rest is sampled first, so
//!    the per-change figure is also given net of what the series' pauses cost;
//!    3b. a rollout storm: `--rollout-services` (50) services replace their
//!    pods one by one together, `--rollout-services` × 10 EndpointSlice
//!    changes over `--rollout-ms` (2,000): the agent's CPU per change, views
//!    per affected proxy, last change -> final endpoints applied;
//! 4. agent restart: SIGKILL, start again on the same sync port, time until
//!    every proxy applies a newer view and has its looked-up hosts back;
//! 5. a real `target/release/mesh-proxy` (on loopback, ports of its own) against
//!    a 100-service mesh and against the full mesh, three starts of each
//!    interleaved: medians of its VmRSS and of the anonymous part (RssAnon)
//!    once ready.
//!
//! Ends with a table (issue 19's goals beside the figures, not asserted) and,
//! with `--out FILE`, the same as JSON. Every wait has a timeout and panics
//! with what it was waiting for; temp dirs and child processes are cleaned up.
//!
//! Files: `mesh` (the YAML), `feed` (where the agent reads it), `procs` (child processes, `/proc`, HTTP),
//! `clients` (the in-process proxies and their probe), `stats` (waits,
//! percentiles), `args` (the command line), `ctx` (what phases 1-4 share), one file per phase
//! (`startup`, `changes`, `rollout`, `restart`, `sidecar`) and `report` (the table and
//! the JSON).

mod args;
mod changes;
mod clients;
mod ctx;
mod feed;
mod mesh;
mod procs;
mod report;
mod restart;
mod rollout;
mod sidecar;
mod startup;
mod stats;

use args::Args;
use clap::Parser;
use clients::Probe;
use ctx::Ctx;
use feed::{Feed, Shape};
use mesh::{write_mesh, ENDPOINTS_PER_SERVICE};
use procs::{clk_tck, cpu_secs, raise_nofile, rss_mib};
use serde_json::json;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args = Args::parse();
    assert!(args.namespaces >= 1 && args.services >= args.namespaces);
    assert!(
        args.changes <= args.services,
        "--changes must not exceed --services"
    );
    assert!(
        args.rollout_services <= args.services.min(4096),
        "--rollout-services must not exceed --services (nor 4096)"
    );
    let started = Instant::now();
    let tck = clk_tck();
    raise_nofile(args.proxies as u64 + 1024);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "scale benchmark, {date}, {cpus} CPUs; proxies are in-process sync-client tasks on one tokio runtime over loopback TCP"
    );
    let root = tempfile::Builder::new()
        .prefix("mesh-scale-")
        .tempdir()
        .unwrap();
    let mesh_dir = root.path().join("mesh");
    std::fs::create_dir(&mesh_dir).unwrap();
    let log = root.path().join("agent.log");
    let vs = args.virtual_services.min(args.services);
    if let Some(dir) = &args.write_mesh {
        std::fs::create_dir_all(dir).unwrap();
        write_mesh(dir, args.services, args.namespaces, vs);
        println!(
            "[mesh] wrote {} Services to {}",
            args.services,
            dir.display()
        );
        return;
    }

    // ---- mesh + agent
    let t = Instant::now();
    let shape = Shape {
        services: args.services,
        namespaces: args.namespaces,
        vs,
    };
    let feed = Feed::new(args.source, &mesh_dir, shape);
    println!(
        "[mesh] {} Services in {} namespaces, {} endpoints, {vs} VirtualServices + {vs} DestinationRules, source {}, written in {:.1}s",
        args.services,
        args.namespaces,
        args.services * ENDPOINTS_PER_SERVICE,
        feed.label(),
        t.elapsed().as_secs_f64()
    );
    let mut agent = feed.start_agent("127.0.0.1:0", &log);
    println!(
        "[agent] pid {} proxies subscribe on {} debug={} listening {:.2}s after spawn; RSS {:.1} MiB, CPU {:.2}s",
        agent.proc.pid(),
        agent.sync,
        agent.debug,
        agent.started_in.as_secs_f64(),
        rss_mib(agent.proc.pid()),
        cpu_secs(agent.proc.pid(), tck)
    );
    let agent_listen_first = agent.started_in;

    let cx = Ctx {
        probe: Arc::new(Probe::new(args.proxies)),
        args,
        vs,
        tck,
        feed,
        log,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut report = json!({
        "date": date,
        "cpus": cpus,
        "config": {
            "proxies": cx.args.proxies, "services": cx.args.services, "namespaces": cx.args.namespaces,
            "endpoints": cx.args.services * ENDPOINTS_PER_SERVICE, "virtual_services": vs,
            "destination_rules": vs, "lookups_per_proxy": cx.args.lookups, "changes": cx.args.changes,
            "change_gap_ms": cx.args.change_gap_ms, "source": cx.feed.label(),
            "rollout_services": cx.args.rollout_services, "rollout_ms": cx.args.rollout_ms,
            "clients": "in-process sync-client tasks on one tokio runtime over loopback TCP",
        },
        "agent_listening_s": agent_listen_first.as_secs_f64(),
    });
    let mut rows: Vec<stats::Row> = Vec::new();

    let clients = rt.block_on(async {
        // ---- phase 1: first views, then lookups (and phase 2's samples)
        let st = startup::run(&cx, &agent, &shutdown).await;
        // ---- phase 3: endpoint changes
        let ch = changes::run(&cx, &agent, &st.clients).await;
        // ---- phase 3b: a rollout storm
        let ro = match cx.args.rollout_services {
            0 => None,
            _ => Some(rollout::run(&cx, &agent, &st.clients).await),
        };
        // ---- phase 4: restart
        let re = restart::run(&cx, &mut agent, &st.clients).await;
        report::in_process(
            &mut rows,
            &mut report,
            &cx,
            agent_listen_first,
            report::Phases {
                st: &st,
                ch: &ch,
                ro: ro.as_ref(),
                re: &re,
            },
        );
        st.clients
    });

    // ---- phase 5: a real sidecar's RSS
    if !cx.args.no_sidecar {
        sidecar::run(
            root.path(),
            &agent.sync,
            cx.args.services,
            &mut rows,
            &mut report,
        );
    }

    // ---- teardown
    shutdown.cancel();
    drop(clients);
    rt.shutdown_timeout(Duration::from_secs(10));
    drop(agent);

    report::finish(rows, &mut report, started, cx.args.out.as_deref());
}
