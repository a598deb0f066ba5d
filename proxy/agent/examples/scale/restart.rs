//! Phase 4, agent restart: SIGKILL the agent, start it again on the same
//! sync port, and time until every proxy applies a newer view and has its
//! looked-up hosts back; then the restarted agent's CPU and RSS.

use crate::ctx::Ctx;
use crate::procs::{listen_overflows, sample, Agent, Sample, SETTLE};
use crate::stats::wait_all;
use mesh_agent::client::Client;
use std::time::{Duration, Instant};

/// What phase 4 measured.
pub struct Restart {
    /// SIGKILL to every proxy's newer view.
    pub resync: Duration,
    /// SIGKILL to every proxy's looked-up hosts back.
    pub back: Duration,
    /// Handshakes dropped on a full accept queue meanwhile.
    pub overflows: u64,
    /// The restarted agent with all proxies back.
    pub after: Sample,
    /// The restarted agent's spawn to "listening".
    pub listening: Duration,
}

/// Restarts `agent` (replacing it with the new one).
pub async fn run(cx: &Ctx, agent: &mut Agent, clients: &[Client]) -> Restart {
    let probe = &cx.probe;
    let port = agent.sync.rsplit(':').next().unwrap().to_string();
    let versions: Vec<u64> = clients
        .iter()
        .map(|c| c.state.borrow().current.as_ref().unwrap().version)
        .collect();
    for (s, v) in probe.slots.iter().zip(&versions) {
        s.lock().unwrap().resync_after = *v;
    }
    println!(
        "[4] SIGKILL the agent (pid {}) and start it again on port {port} ...",
        agent.proc.pid()
    );
    agent.proc.kill();
    let overflows0 = listen_overflows();
    let t_kill = Instant::now();
    *agent = cx.feed.start_agent(&format!("127.0.0.1:{port}"), &cx.log);
    println!(
        "[4] new agent pid {} listening {:.2}s after spawn",
        agent.proc.pid(),
        agent.started_in.as_secs_f64()
    );
    wait_all(
        "proxies resynced (newer view)",
        cx.args.proxies,
        Duration::from_secs(600),
        || probe.count(|s| s.resync.is_some()),
    )
    .await;
    wait_all(
        "proxies with their looked-up hosts back",
        cx.args.proxies,
        Duration::from_secs(120),
        || probe.count(|s| s.hosts_back.is_some()),
    )
    .await;
    let (resync, back) = probe.slots.iter().fold((t_kill, t_kill), |(a, b), s| {
        let s = s.lock().unwrap();
        (a.max(s.resync.unwrap()), b.max(s.hosts_back.unwrap()))
    });
    let (resync, back) = (resync - t_kill, back - t_kill);
    let overflows = listen_overflows() - overflows0;
    println!(
        "[4] every proxy has a newer view {:.2}s after the kill, with its looked-up hosts {:.2}s after it \
         ({overflows} handshakes dropped on a full accept queue)",
        resync.as_secs_f64(),
        back.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let after = sample(agent.proc.pid(), cx.tck);
    println!(
        "[2] restarted agent with all proxies back: CPU {:.2}s total, RSS {:.1} MiB",
        after.cpu_s, after.rss_mib
    );
    Restart {
        resync,
        back,
        overflows,
        after,
        listening: agent.started_in,
    }
}
