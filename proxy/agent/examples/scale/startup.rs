//! Phase 1, startup: every proxy's first view, then its on-demand lookups of
//! services in other namespaces answered; with the agent's CPU and RSS at
//! rest after connect and after the lookups (phase 2's first samples).

use crate::clients::{connect, has};
use crate::ctx::Ctx;
use crate::mesh::{host, lookups_of};
use crate::procs::{listen_overflows, sample, Agent, Sample, SETTLE};
use crate::stats::{ms, pct, wait_all};
use mesh_agent::client::Client;
use mesh_api::synclookup::Answer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What phase 1 measured.
pub struct Startup {
    /// The connected proxies (phases 3 and 4 use them; dropped at teardown).
    pub clients: Vec<Client>,
    /// Connect to the last proxy's first view.
    pub first_all: Duration,
    /// Handshakes dropped on a full accept queue while connecting.
    pub connect_overflows: u64,
    /// The agent at rest after connect.
    pub idle: Sample,
    /// Lookups asked.
    pub total: usize,
    /// Start of the lookups to the last answer.
    pub lookups_all: Duration,
    pub found: usize,
    pub not_found: usize,
    pub unavailable: usize,
    /// Per-lookup latencies, sorted.
    pub lat: Vec<Duration>,
    /// Proxies whose view lacks a host the agent found for them.
    pub missing: usize,
    /// The agent after the lookups.
    pub after_lookups: Sample,
}

pub async fn run(cx: &Ctx, agent: &Agent, shutdown: &CancellationToken) -> Startup {
    let lookups = cx.args.lookups;
    let probe = &cx.probe;
    // ---- first views
    println!("[1] connecting {} proxies ...", cx.args.proxies);
    let overflows0 = listen_overflows();
    let t0 = Instant::now();
    let clients = connect(
        &agent.sync,
        cx.args.proxies,
        cx.args.namespaces,
        probe,
        shutdown,
    );
    wait_all(
        "first views",
        cx.args.proxies,
        Duration::from_secs(600),
        || probe.count(|s| s.first.is_some()),
    )
    .await;
    let first_all = probe
        .slots
        .iter()
        .filter_map(|s| s.lock().unwrap().first)
        .max()
        .unwrap()
        - t0;
    let view_sizes: Vec<usize> = clients
        .iter()
        .map(|c| {
            c.state
                .borrow()
                .current
                .as_ref()
                .map_or(0, |v| v.services.len())
        })
        .collect();
    let connect_overflows = listen_overflows() - overflows0;
    println!(
        "[1] all {} proxies have their first view after {:.2}s ({} services in proxy 0's view; \
         {connect_overflows} handshakes dropped on a full accept queue)",
        cx.args.proxies,
        first_all.as_secs_f64(),
        view_sizes[0]
    );
    tokio::time::sleep(SETTLE).await;
    let idle = sample(agent.proc.pid(), cx.tck);
    println!(
        "[2] agent at rest after connect: CPU {:.2}s total, RSS {:.1} MiB",
        idle.cpu_s, idle.rss_mib
    );

    // ---- lookups
    let total = cx.args.proxies * lookups;
    println!("[1] {total} on-demand lookups ({lookups} per proxy, other namespaces) ...");
    let answered = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        let answered = answered.clone();
        let targets = lookups_of(i, lookups, cx.args.services, cx.args.namespaces);
        let hosts: Vec<String> = targets
            .iter()
            .map(|&j| host(j, cx.args.namespaces))
            .collect();
        tasks.spawn(async move {
            let asks = hosts.into_iter().map(|h| {
                let c = c.clone();
                let answered = answered.clone();
                async move {
                    let t = Instant::now();
                    let a = c.lookup(h.clone()).await;
                    answered.fetch_add(1, Ordering::Relaxed);
                    (h, a, t.elapsed(), Instant::now())
                }
            });
            (i, futures::future::join_all(asks).await)
        });
    }
    let a2 = answered.clone();
    let waiter = tokio::spawn(async move {
        wait_all("lookups answered", total, Duration::from_secs(600), || {
            a2.load(Ordering::Relaxed)
        })
        .await
    });
    let mut lat = Vec::with_capacity(total);
    let mut last = t0;
    let (mut found, mut not_found, mut unavailable) = (0, 0, 0);
    while let Some(r) = tasks.join_next().await {
        let (i, res) = r.expect("lookup task");
        for (h, a, d, at) in res {
            lat.push(d);
            last = last.max(at);
            match a {
                Answer::Found(f) => {
                    assert_eq!(f, h, "lookup of {h} found another host");
                    found += 1;
                    probe.slots[i].lock().unwrap().wanted.push(f);
                }
                Answer::NotInMesh => not_found += 1,
                Answer::Unavailable(why) => {
                    unavailable += 1;
                    if unavailable <= 3 {
                        println!("    lookup {h} by p-{i}: unavailable: {why}");
                    }
                }
            }
        }
    }
    waiter.await.expect("lookup wait");
    lat.sort();
    let lookups_all = last - t0;
    println!(
        "[1] {total} lookups answered after {:.2}s: {found} found, {not_found} not in mesh, {unavailable} unavailable; per lookup p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        lookups_all.as_secs_f64(),
        ms(pct(&lat, 50.0)),
        ms(pct(&lat, 99.0)),
        ms(pct(&lat, 100.0))
    );
    let missing = clients
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            let wanted = probe.slots[*i].lock().unwrap().wanted.clone();
            let st = c.state.borrow();
            let v = st.current.as_ref().unwrap();
            !wanted.iter().all(|h| has(v, h).is_some())
        })
        .count();
    println!("[1] proxies whose view lacks a found host: {missing}");
    tokio::time::sleep(SETTLE).await;
    let after_lookups = sample(agent.proc.pid(), cx.tck);
    println!(
        "[2] agent after lookups: CPU {:.2}s total (+{:.2}s), RSS {:.1} MiB",
        after_lookups.cpu_s,
        after_lookups.cpu_s - idle.cpu_s,
        after_lookups.rss_mib
    );
    Startup {
        clients,
        first_all,
        connect_overflows,
        idle,
        total,
        lookups_all,
        found,
        not_found,
        unavailable,
        lat,
        missing,
        after_lookups,
    }
}
