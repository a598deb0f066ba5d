//! Phase 3, the change series: the agent's CPU at rest with every proxy
//! connected, then `--changes` EndpointSlice changes one at a time (a
//! different service each time, a new marker endpoint IP), each timed from
//! the file write or API update to every affected proxy's apply callback seeing the marker;
//! with the agent's CPU and view bytes (`/metrics`) per change.

use crate::clients::has;
use crate::ctx::Ctx;
use crate::mesh::host;
use crate::procs::{
    context_switches, cpu_secs, cpu_split, sample, view_counters, Agent, Sample, ViewCounters,
    SETTLE,
};
use crate::stats::{ms, pct, wait_all};
use mesh_agent::client::Client;
use serde_json::json;
use std::time::{Duration, Instant};

/// How long the agent's CPU at rest is sampled before the change series.
const REST_WINDOW: Duration = Duration::from_secs(5);

/// What phase 3 measured.
pub struct Changes {
    /// Changes in the series (`--changes`).
    pub count: usize,
    /// The agent's CPU seconds per second at rest, all proxies connected.
    pub rest_per_s: f64,
    /// Change -> applied for every (change, affected proxy) pair, sorted.
    pub all: Vec<Duration>,
    /// One JSON object per change.
    pub per_change: Vec<serde_json::Value>,
    /// Affected proxies per change, mean.
    pub affected_mean: f64,
    /// The series' length, pauses included.
    pub series_s: f64,
    /// The agent's CPU seconds per change, and net of its CPU at rest.
    pub cpu_per_change: f64,
    pub net_per_change: f64,
    /// The agent's CPU seconds per change in user space and in the kernel,
    /// and its threads' context switches per change.
    pub user_per_change: f64,
    pub kernel_per_change: f64,
    pub switches_per_change: f64,
    /// This process's CPU seconds per change.
    pub own_per_change: f64,
    /// View counters before and after the series.
    pub m0: ViewCounters,
    pub m1: ViewCounters,
    /// Per change: full-view, delta and version-only bytes and messages.
    pub full_b: f64,
    pub delta_b: f64,
    pub full_m: f64,
    pub delta_m: f64,
    pub unch_m: f64,
    pub unch_b: f64,
    /// The agent after the series.
    pub after_changes: Sample,
}

pub async fn run(cx: &Ctx, agent: &Agent, clients: &[Client]) -> Changes {
    let (changes, change_gap_ms) = (cx.args.changes, cx.args.change_gap_ms);
    let (probe, tck, own) = (&cx.probe, cx.tck, std::process::id());
    // What the agent spends at rest with every proxy connected, so the
    // change series' figure (which includes its pauses) can be read net.
    let r0 = cpu_secs(agent.proc.pid(), tck);
    tokio::time::sleep(REST_WINDOW).await;
    let rest_per_s = (cpu_secs(agent.proc.pid(), tck) - r0) / REST_WINDOW.as_secs_f64();
    println!(
        "[3] agent at rest with {} proxies connected: {:.1} ms CPU per second (over {}s)",
        cx.args.proxies,
        rest_per_s * 1e3,
        REST_WINDOW.as_secs()
    );
    println!("[3] {changes} EndpointSlice changes, one at a time ...");
    let m0 = view_counters(&agent.debug);
    let series_started = Instant::now();
    let c0 = cpu_secs(agent.proc.pid(), tck);
    let (u0, k0) = cpu_split(agent.proc.pid(), tck);
    let x0 = context_switches(agent.proc.pid());
    let own0 = cpu_secs(own, tck);
    let mut all = Vec::new();
    let mut per_change = Vec::new();
    let mut affected_total = 0;
    for c in 0..changes {
        let svc = (c * 101 + 37) % cx.args.services;
        let h = host(svc, cx.args.namespaces);
        let ip = format!("10.250.{}.{}", c / 250, c % 250 + 1);
        let affected: Vec<usize> = clients
            .iter()
            .enumerate()
            .filter(|(_, cl)| {
                cl.state
                    .borrow()
                    .current
                    .as_ref()
                    .is_some_and(|v| has(v, &h).is_some())
            })
            .map(|(i, _)| i)
            .collect();
        affected_total += affected.len();
        *probe.target.write().unwrap() = Some((h.clone(), ip.clone(), c));
        let t0 = Instant::now();
        cx.feed.change(svc, cx.shape(), &ip);
        wait_all(
            &format!("change {c} ({h}) applied by its affected proxies"),
            affected.len(),
            Duration::from_secs(60),
            || {
                affected
                    .iter()
                    .filter(|&&i| {
                        probe.slots[i]
                            .lock()
                            .unwrap()
                            .marker
                            .is_some_and(|m| m.0 == c)
                    })
                    .count()
            },
        )
        .await;
        let mut d: Vec<Duration> = affected
            .iter()
            .map(|&i| probe.slots[i].lock().unwrap().marker.unwrap().1 - t0)
            .collect();
        d.sort();
        println!(
            "    change {:>3}/{}: {h} -> {ip}: {} affected proxies, p50 {:.1} ms, max {:.1} ms",
            c + 1,
            changes,
            affected.len(),
            ms(pct(&d, 50.0)),
            ms(pct(&d, 100.0))
        );
        per_change.push(json!({"service": h, "affected": affected.len(),
            "p50_ms": ms(pct(&d, 50.0)), "max_ms": ms(pct(&d, 100.0))}));
        all.extend(d);
        tokio::time::sleep(Duration::from_millis(change_gap_ms)).await;
    }
    *probe.target.write().unwrap() = None;
    tokio::time::sleep(SETTLE).await;
    let c1 = cpu_secs(agent.proc.pid(), tck);
    let (u1, k1) = cpu_split(agent.proc.pid(), tck);
    let x1 = context_switches(agent.proc.pid());
    let series_s = series_started.elapsed().as_secs_f64();
    let own1 = cpu_secs(own, tck);
    let m1 = view_counters(&agent.debug);
    let after_changes = sample(agent.proc.pid(), tck);
    all.sort();
    let n = changes.max(1) as f64;
    let cpu_per_change = (c1 - c0) / n;
    let net_per_change = (c1 - c0 - rest_per_s * series_s).max(0.0) / n;
    let own_per_change = (own1 - own0) / n;
    let (user_per_change, kernel_per_change) = ((u1 - u0) / n, (k1 - k0) / n);
    let switches_per_change = x1.saturating_sub(x0) as f64 / n;
    let full_b = (m1.full_bytes - m0.full_bytes) / n;
    let delta_b = (m1.delta_bytes - m0.delta_bytes) / n;
    let full_m = (m1.full_msgs - m0.full_msgs) / n;
    let delta_m = (m1.delta_msgs - m0.delta_msgs) / n;
    let unch_m = (m1.unchanged_msgs - m0.unchanged_msgs) / n;
    let unch_b = (m1.unchanged_bytes - m0.unchanged_bytes) / n;
    println!(
        "[3] change -> applied over {} (change, proxy) pairs: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        all.len(),
        ms(pct(&all, 50.0)),
        ms(pct(&all, 99.0)),
        ms(pct(&all, 100.0))
    );
    println!(
        "[3] per change: agent CPU {:.3}s ({:.1}s per 1,000 changes), {full_m:.1} full views ({:.0} bytes) + {delta_m:.1} deltas ({:.0} bytes) + {unch_m:.1} version-only ({unch_b:.0} bytes) sent; benchmark process CPU {:.3}s",
        cpu_per_change,
        cpu_per_change * 1000.0,
        full_b,
        delta_b,
        own_per_change
    );
    println!(
        "[3] per change: agent user {:.2} ms + kernel {:.2} ms, {switches_per_change:.1} context switches",
        user_per_change * 1e3,
        kernel_per_change * 1e3
    );
    println!(
        "[3] the series took {series_s:.1}s; net of the agent's CPU at rest over that time: {:.1}s per 1,000 changes",
        net_per_change * 1000.0
    );
    println!(
        "[2] agent after the change series: CPU {:.2}s total, RSS {:.1} MiB",
        after_changes.cpu_s, after_changes.rss_mib
    );
    Changes {
        count: changes,
        rest_per_s,
        all,
        per_change,
        affected_mean: affected_total as f64 / n,
        series_s,
        cpu_per_change,
        net_per_change,
        user_per_change,
        kernel_per_change,
        switches_per_change,
        own_per_change,
        m0,
        m1,
        full_b,
        delta_b,
        full_m,
        delta_m,
        unch_m,
        unch_b,
        after_changes,
    }
}
