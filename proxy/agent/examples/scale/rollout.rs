//! Phase 3b, a rollout storm: `--rollout-services` services in as many
//! namespaces replace their pods one by one at the same time, as when many
//! Deployments roll out together. Each step of a service is one EndpointSlice
//! change (its next endpoint gets a new address); the steps of all services
//! are spread evenly over `--rollout-ms`. Phase 3 measures changes one at a
//! time, each after a quiet period; this phase measures what the agent's
//! debounce makes of a storm: its CPU per change, the views each affected
//! proxy applies, and the time from a proxy's last relevant change to a view
//! holding every rolled service's final endpoints.

use crate::clients::has;
use crate::ctx::Ctx;
use crate::mesh::{addresses, host, ENDPOINTS_PER_SERVICE};
use crate::procs::{cpu_secs, view_counters, Agent, SETTLE};
use crate::stats::{ms, pct, wait_all};
use mesh_agent::client::Client;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// What phase 3b measured.
pub struct Rollout {
    /// Services rolled out, and EndpointSlice changes written in all.
    pub services: usize,
    pub changes: usize,
    /// From the first write to the last.
    pub span_s: f64,
    /// Proxies whose view holds a rolled service, and (proxy, service) pairs.
    pub affected: usize,
    pub pairs: usize,
    /// Per affected proxy: its last relevant change -> the first view holding
    /// every rolled service's final endpoints; sorted.
    pub settled: Vec<Duration>,
    /// Views each affected proxy applied during the storm, mean.
    pub views_per_proxy: f64,
    /// The agent's CPU seconds per change, storm and settling included.
    pub cpu_per_change: f64,
    /// Delta messages and bytes sent per change.
    pub delta_m: f64,
    pub delta_b: f64,
}

/// The address step `k` of rolled service `r` gives its endpoint `k`.
fn new_address(r: usize, k: usize) -> String {
    format!("10.{}.{}.{}", 240 + r / 256, r % 256, k + 1)
}

/// The services rolled out: `n` of them, spread over namespaces.
fn pick(n: usize, services: usize) -> Vec<usize> {
    let mut used = HashSet::new();
    (0..n)
        .map(|r| {
            let mut i = (r * 101 + 53) % services;
            while !used.insert(i) {
                i = (i + 1) % services;
            }
            i
        })
        .collect()
}

pub async fn run(cx: &Ctx, agent: &Agent, clients: &[Client]) -> Rollout {
    let n = cx.args.rollout_services;
    let (probe, tck) = (&cx.probe, cx.tck);
    let rolled = pick(n, cx.args.services);
    let hosts: Vec<String> = rolled
        .iter()
        .map(|&i| host(i, cx.args.namespaces))
        .collect();
    let last = ENDPOINTS_PER_SERVICE - 1;
    // Which proxies hold which rolled services, and the address that says
    // a proxy has the service's final EndpointSlice.
    let mut affected = Vec::new();
    let mut pairs = 0;
    for (p, cl) in clients.iter().enumerate() {
        let state = cl.state.borrow();
        let Some(view) = state.current.as_ref() else {
            continue;
        };
        let mine: Vec<(usize, (String, String))> = hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| has(view, h).is_some())
            .map(|(r, h)| (r, (h.clone(), new_address(r, last))))
            .collect();
        if mine.is_empty() {
            continue;
        }
        pairs += mine.len();
        let mut slot = probe.slots[p].lock().unwrap();
        slot.rolled = None;
        slot.rollout = mine.iter().map(|(_, t)| t.clone()).collect();
        affected.push((
            p,
            mine.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            slot.applies,
        ));
    }
    let changes = n * ENDPOINTS_PER_SERVICE;
    let gap = Duration::from_millis(cx.args.rollout_ms) / changes.max(1) as u32;
    println!(
        "[3b] rollout: {n} services in {} namespaces replace their {ENDPOINTS_PER_SERVICE} pods one by one, {changes} EndpointSlice changes over {} ms; {} proxies hold {pairs} (proxy, service) pairs ...",
        rolled.iter().map(|i| i % cx.args.namespaces).collect::<HashSet<_>>().len(),
        cx.args.rollout_ms,
        affected.len()
    );
    let m0 = view_counters(&agent.debug);
    let c0 = cpu_secs(agent.proc.pid(), tck);
    let mut addrs: Vec<Vec<String>> = rolled.iter().map(|&i| addresses(i)).collect();
    let mut final_write = vec![Instant::now(); n];
    let mut tick = tokio::time::interval(gap.max(Duration::from_micros(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for k in 0..ENDPOINTS_PER_SERVICE {
        for (r, &i) in rolled.iter().enumerate() {
            tick.tick().await;
            addrs[r][k] = new_address(r, k);
            final_write[r] = Instant::now();
            cx.feed.set_endpoints(i, cx.shape(), &addrs[r]);
        }
        println!(
            "    step {}/{ENDPOINTS_PER_SERVICE}: {n} EndpointSlices written, {:.2}s in",
            k + 1,
            started.elapsed().as_secs_f64()
        );
    }
    let span_s = started.elapsed().as_secs_f64();
    wait_all(
        "every affected proxy holding the rollout's final endpoints",
        affected.len(),
        Duration::from_secs(60),
        || {
            affected
                .iter()
                .filter(|(p, ..)| probe.slots[*p].lock().unwrap().rolled.is_some())
                .count()
        },
    )
    .await;
    tokio::time::sleep(SETTLE).await;
    let c1 = cpu_secs(agent.proc.pid(), tck);
    let m1 = view_counters(&agent.debug);
    let mut settled = Vec::new();
    let mut views = 0;
    for (p, rs, applies0) in &affected {
        let mut slot = probe.slots[*p].lock().unwrap();
        let due = rs.iter().map(|&r| final_write[r]).max().unwrap();
        settled.push(slot.rolled.unwrap().saturating_duration_since(due));
        views += slot.applies - applies0;
        slot.rollout.clear();
    }
    settled.sort();
    let per = changes.max(1) as f64;
    let ro = Rollout {
        services: n,
        changes,
        span_s,
        affected: affected.len(),
        pairs,
        views_per_proxy: views as f64 / affected.len().max(1) as f64,
        cpu_per_change: (c1 - c0) / per,
        delta_m: (m1.delta_msgs - m0.delta_msgs) / per,
        delta_b: (m1.delta_bytes - m0.delta_bytes) / per,
        settled,
    };
    println!(
        "[3b] rollout: {} changes in {:.2}s; each of {} affected proxies applied {:.1} views; last change -> final endpoints applied p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ro.changes,
        ro.span_s,
        ro.affected,
        ro.views_per_proxy,
        ms(pct(&ro.settled, 50.0)),
        ms(pct(&ro.settled, 99.0)),
        ms(pct(&ro.settled, 100.0))
    );
    println!(
        "[3b] rollout: agent CPU {:.2} vCPU-s per 1,000 changes; {:.1} deltas ({:.0} bytes) per change",
        ro.cpu_per_change * 1000.0,
        ro.delta_m,
        ro.delta_b
    );
    ro
}
