//! The sidecar's CPU scheduling class (`proxy/src/sched.rs`) on the real
//! kernel. The client's proxy runs unprivileged (UID 1337) in its pod, as
//! injected: it starts in SCHED_BATCH; with a busy loop on every CPU and
//! traffic through it, its run-queue waits show contention and it goes back
//! to SCHED_OTHER (also when more busy loops than CPUs leave it only a few
//! hundred time slices a second); with the loops gone, it tries SCHED_BATCH
//! again after its first backoff (10 s); `mesh_proxy_cpu_class_batch` and
//! `mesh_proxy_cpu_class_switches_total` report it. `--cpu-policy normal`
//! leaves the class alone.

mod common;

use std::process::{Child, Command};

use common::*;
use mesh_e2e::wait::eventually_blocking;

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// The scheduling policy of each thread of `pid` (`/proc/<pid>/task/*/stat`,
/// field 41).
fn policies(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue;
        };
        // Fields after the command name, which may hold spaces: state is 3.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        out.push(policy);
    }
    assert!(!out.is_empty(), "no threads under /proc/{pid}/task");
    out
}

fn all_in(pid: u32, policy: u32) -> bool {
    policies(pid).iter().all(|&p| p == policy)
}

/// The run-queue wait (ns) and time slices summed over `pid`'s threads
/// (`/proc/<pid>/task/*/schedstat`), parsed as the governor parses them.
fn schedstat(pid: u32) -> (u64, u64) {
    let (mut wait, mut slices) = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(text) = std::fs::read_to_string(task.unwrap().path().join("schedstat")) else {
            continue;
        };
        let s = mesh_proxy::sched::parse_schedstat(&text).expect("a schedstat line");
        wait += s.wait_ns;
        slices += s.slices;
    }
    (wait, slices)
}

/// Waits up to `limit` for every thread of `pid` to be in `policy`. On
/// timeout the panic lists what the proxy went through each second (slices
/// run, mean wait per slice): the figures its governor judges by.
fn wait_for_policy(pid: u32, policy: u32, limit: Duration, what: &str) -> Duration {
    let start = std::time::Instant::now();
    let mut seconds = Vec::new();
    let (mut mark, mut last) = (start, schedstat(pid));
    while !all_in(pid, policy) {
        if mark.elapsed() >= Duration::from_secs(1) {
            let now = schedstat(pid);
            let slices = now.1.saturating_sub(last.1);
            let wait_us = now.0.saturating_sub(last.0) / slices.max(1) / 1_000;
            seconds.push(format!("{slices} slices, {wait_us} µs"));
            (mark, last) = (std::time::Instant::now(), now);
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; each second: {}",
            seconds.join("; ")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The value of the unlabelled sample `name` in the client proxy's metrics.
fn gauge(w: &World, name: &str) -> Option<f64> {
    metrics(&w.client)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Busy loops, three per CPU, each ended by `timeout` after 90 s at the
/// latest and by SIGTERM (which `timeout` passes on) when dropped. Three
/// rather than one: the more loops, the fewer requests the sequential client
/// gets through and the fewer time slices the proxy has to judge by
/// (measured on a 2-core VM: 230–390 a second with three loops a CPU,
/// 700–900 with one).
struct Hogs(Vec<Child>);

impl Hogs {
    fn start() -> Hogs {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Hogs(
            (0..3 * n)
                .map(|_| {
                    Command::new("timeout")
                        .args(["90", "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

#[test]
fn the_proxy_leaves_sched_batch_while_the_cpus_are_contended() {
    let w = world(1, "ALLOW_ANY");
    let pid = w.client_proxy.pid();
    eventually_blocking(
        "the proxy's threads in SCHED_BATCH",
        Duration::from_secs(10),
        || all_in(pid, SCHED_BATCH),
    );
    assert_eq!(gauge(&w, "mesh_proxy_cpu_class_batch"), Some(1.0));
    // Traffic through the client's proxy for at most 90 s, ended when the
    // test ends (PodProcess kills it on drop).
    let script = format!(
        "end=$((SECONDS + 90)); while [ $SECONDS -lt $end ]; do \
         curl -s -o /dev/null 'http://{VIP}:8080/sched-[1-200]'; done"
    );
    let _traffic = w.client.spawn(APP, &["bash", "-c", &script]).unwrap();
    let hogs = Hogs::start();
    let took = wait_for_policy(
        pid,
        SCHED_OTHER,
        Duration::from_secs(40),
        "SCHED_OTHER with every CPU busy",
    );
    eprintln!("contention seen after {took:?}");
    // The metrics say so too (recorded once every thread is switched).
    eventually_blocking(
        "mesh_proxy_cpu_class_batch 0",
        Duration::from_secs(5),
        || gauge(&w, "mesh_proxy_cpu_class_batch") == Some(0.0),
    );
    assert!(gauge(&w, "mesh_proxy_cpu_class_switches_total") >= Some(1.0));
    drop(hogs);
    let took = wait_for_policy(
        pid,
        SCHED_BATCH,
        Duration::from_secs(30),
        "SCHED_BATCH tried again once the CPUs are free",
    );
    eprintln!("SCHED_BATCH again after {took:?}");
    assert!(gauge(&w, "mesh_proxy_cpu_class_switches_total") >= Some(2.0));
    // And the proxy served throughout.
    let r = curl_echo(&w.client, &[&format!("http://{VIP}:8080/after")]);
    assert_eq!(r.path, "/after");
}

#[test]
fn cpu_policy_normal_leaves_the_class_alone() {
    let w = world_with(1, "ALLOW_ANY", &["--cpu-policy", "normal"]);
    // Bound and serving (`world_with` waited for both): the class is the
    // one the process started with.
    let r = curl_echo(&w.client, &[&format!("http://{VIP}:8080/normal")]);
    assert_eq!(r.path, "/normal");
    let pid = w.client_proxy.pid();
    assert!(all_in(pid, SCHED_OTHER), "{:?}", policies(pid));
    // A class the proxy never changed is not reported.
    assert_eq!(gauge(&w, "mesh_proxy_cpu_class_batch"), None);
}
