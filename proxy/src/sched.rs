//! The CPU scheduling class of the proxy's threads.
//!
//! A sidecar is woken by every packet its app or its peer sends, and the
//! sender is usually about to block (it waits for the answer). Under Linux's
//! default class (`SCHED_OTHER`) the woken sidecar often preempts that sender
//! on its CPU; the sender is later switched back in only to go to sleep. That
//! is one needless pair of context switches per hop, and on the bench's VM a
//! context switch is the largest single cost of a request. `SCHED_BATCH` (same
//! weight and nice value; it only gives up wake-up preemption, see sched(7))
//! lets the sender finish and block first: measured, 24 % fewer context
//! switches, 22 % less sidecar CPU, 18 % less CPU machine-wide, and a lower
//! median latency at 1000 req/s.
//!
//! The price comes when the CPUs are busy with other work: a batch thread then
//! waits for the running task's time slice to end (median latency rose from
//! 0.35 to 0.83 ms next to two busy loops on two cores). So [`Governor`] watches
//! how long the threads wait on a run queue per time slice
//! (`/proc/self/task/*/schedstat`) and goes back to `SCHED_OTHER` once that
//! wait has shown contended CPUs in three windows in a row (a window is a
//! second, or as many seconds as it takes to gather enough time slices: the
//! busier the CPUs, the fewer requests a sidecar gets through), trying
//! `SCHED_BATCH` again after a backoff.
//! `--cpu-policy normal` or `batch` fixes the class instead.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The class this process last put its threads in: 0 while it has never
/// changed it (`--cpu-policy normal`, a refused call, a library user), then
/// 1 + the `Class` discriminant.
static CLASS: AtomicU8 = AtomicU8::new(0);
/// Changes the governor made.
static SWITCHES: AtomicU64 = AtomicU64::new(0);

fn record(class: Class) {
    CLASS.store(1 + class as u8, Ordering::Relaxed);
}

/// Prometheus lines for `/stats/prometheus`: whether the threads are in
/// `SCHED_BATCH` now, and how often the governor changed the class. Empty
/// while the process never changed its class.
pub fn render() -> String {
    let batch = match CLASS.load(Ordering::Relaxed) {
        0 => return String::new(),
        c => u8::from(c == 1 + Class::Batch as u8),
    };
    format!(
        "# TYPE mesh_proxy_cpu_class_batch gauge\nmesh_proxy_cpu_class_batch {batch}\n# TYPE mesh_proxy_cpu_class_switches_total counter\nmesh_proxy_cpu_class_switches_total {}\n",
        SWITCHES.load(Ordering::Relaxed)
    )
}

/// `--cpu-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuPolicy {
    /// `SCHED_BATCH` while the CPUs have room, `SCHED_OTHER` while they are
    /// contended.
    #[default]
    Adaptive,
    /// Always `SCHED_OTHER` (the class is never changed).
    Normal,
    /// Always `SCHED_BATCH`.
    Batch,
}

impl std::str::FromStr for CpuPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "adaptive" => Ok(CpuPolicy::Adaptive),
            "normal" => Ok(CpuPolicy::Normal),
            "batch" => Ok(CpuPolicy::Batch),
            other => Err(format!(
                "--cpu-policy must be adaptive, normal or batch, got {other:?}"
            )),
        }
    }
}

/// A scheduling class the governor switches between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Batch,
    Other,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Batch => "SCHED_BATCH",
            Class::Other => "SCHED_OTHER",
        }
    }
}

/// Cumulative run-queue figures of the process's threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Nanoseconds spent runnable but waiting for a CPU.
    pub wait_ns: u64,
    /// Time slices run (each wake-up starts one).
    pub slices: u64,
}

/// Mean run-queue wait per time slice above which the CPUs count as
/// contended. Measured per slice: 25–33 µs for a batch sidecar at 1000 req/s
/// on an otherwise idle 2-core VM, 260–390 µs with two busy loops beside it
/// (and 48–66 µs for a `SCHED_OTHER` one there).
pub const CONTENDED_WAIT: Duration = Duration::from_micros(100);
/// Fewer slices than this say too little to judge by: a window stays open
/// until it has this many. An idle sidecar runs about 20 a second (its
/// timers), and while its neighbours are busy those few wait 60–300 µs each:
/// that says nothing about the traffic it would carry. A sidecar at
/// 1000 req/s runs about 1,700; one carrying a sequential client's requests
/// next to eight busy loops on two cores, 230–320 (measured), so a threshold
/// judged per second alone would miss the most contended CPUs.
pub const MIN_SLICES: u64 = 200;
/// A window that has not gathered [`MIN_SLICES`] slices in this long is
/// dropped unjudged (an idle sidecar's timers never add up to a verdict)
/// and breaks a run of contended windows.
pub const MAX_WINDOW: Duration = Duration::from_secs(5);
/// Contended windows in a row before the class changes: one busy second (a
/// neighbour starting up, a burst) is not contention worth leaving
/// `SCHED_BATCH` for minutes over.
pub const CONTENDED_PERIODS: u32 = 3;
/// First wait before `SCHED_BATCH` is tried again; doubled after each try
/// that meets contention again, up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// `SCHED_BATCH` this long without contention resets the backoff.
pub const CALM_RESET: Duration = Duration::from_secs(60);

/// The decision over successive [`Sample`]s: a pure state machine, so its
/// timing is tested without a clock or a kernel.
#[derive(Debug)]
pub struct Governor {
    class: Class,
    /// Where the open window started, and the sums then.
    window: Option<(Instant, Sample)>,
    retry_at: Option<Instant>,
    backoff: Duration,
    calm_since: Instant,
    /// Contended periods in a row so far.
    streak: u32,
}

/// A change of class, with the mean wait that caused it (none for a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub to: Class,
    pub mean_wait: Option<Duration>,
}

impl Governor {
    /// Starts in `SCHED_BATCH` at `now`.
    pub fn new(now: Instant) -> Governor {
        Governor {
            class: Class::Batch,
            window: None,
            retry_at: None,
            backoff: FIRST_RETRY,
            calm_since: now,
            streak: 0,
        }
    }

    pub fn class(&self) -> Class {
        self.class
    }

    /// Takes the sample read at `now`; returns the class to switch to, if any.
    pub fn observe(&mut self, now: Instant, sample: Sample) -> Option<Switch> {
        if self.class == Class::Other {
            // The next SCHED_BATCH spell opens a fresh window.
            self.window = Some((now, sample));
            if self.retry_at.is_some_and(|t| now >= t) {
                self.class = Class::Batch;
                self.retry_at = None;
                self.calm_since = now;
                return Some(Switch {
                    to: Class::Batch,
                    mean_wait: None,
                });
            }
            return None;
        }
        let Some((opened, start)) = self.window else {
            self.window = Some((now, sample));
            return None;
        };
        // A thread that ended takes its counters with it: a sum that went
        // down says nothing about this window; the next one starts here.
        if sample.slices < start.slices || sample.wait_ns < start.wait_ns {
            self.window = Some((now, sample));
            return None;
        }
        let slices = sample.slices - start.slices;
        let mean = if slices >= MIN_SLICES {
            Some(Duration::from_nanos(
                (sample.wait_ns - start.wait_ns) / slices,
            ))
        } else if now.duration_since(opened) >= MAX_WINDOW {
            None
        } else {
            // Too few slices yet: the window stays open.
            return None;
        };
        self.window = Some((now, sample));
        match mean {
            Some(mean) if mean > CONTENDED_WAIT && self.streak + 1 < CONTENDED_PERIODS => {
                self.streak += 1;
                None
            }
            Some(mean) if mean > CONTENDED_WAIT => {
                self.streak = 0;
                self.class = Class::Other;
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_RETRY);
                Some(Switch {
                    to: Class::Other,
                    mean_wait: Some(mean),
                })
            }
            _ => {
                self.streak = 0;
                if now.duration_since(self.calm_since) >= CALM_RESET {
                    self.backoff = FIRST_RETRY;
                }
                None
            }
        }
    }
}

/// Reads `wait` and `slices` from one `schedstat` file's text (`<run ns>
/// <wait ns> <slices>`).
pub fn parse_schedstat(text: &str) -> Option<Sample> {
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    let _run = fields.next()??;
    Some(Sample {
        wait_ns: fields.next()??,
        slices: fields.next()??,
    })
}

/// The summed [`Sample`] of every thread of this process.
pub fn read_sample() -> std::io::Result<Sample> {
    let mut sum = Sample::default();
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Some(s) = parse_schedstat(&text) {
            sum.wait_ns += s.wait_ns;
            sum.slices += s.slices;
        }
    }
    Ok(sum)
}

fn policy_of(class: Class) -> scheduler::Policy {
    match class {
        Class::Batch => scheduler::Policy::Batch,
        Class::Other => scheduler::Policy::Other,
    }
}

/// Puts the calling thread in `class`; threads it starts afterwards inherit
/// it (the binary calls this before building its runtime).
pub fn set_current(class: Class) -> std::io::Result<()> {
    scheduler::set_self_policy(policy_of(class), 0)
        .map_err(|()| std::io::Error::last_os_error())?;
    record(class);
    Ok(())
}

/// Puts every thread of this process in `class`.
pub fn set_all(class: Class) -> std::io::Result<()> {
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?;
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        if scheduler::set_policy(tid, policy_of(class), 0).is_err() {
            let e = std::io::Error::last_os_error();
            // ESRCH: the thread ended meanwhile.
            if e.raw_os_error() != Some(nix::libc::ESRCH) {
                return Err(e);
            }
        }
    }
    record(class);
    Ok(())
}

/// Runs the [`Governor`] once a `period` for the life of the runtime. The
/// process's threads must already be in `SCHED_BATCH` ([`set_current`]).
pub async fn govern(period: Duration) {
    let mut governor = Governor::new(Instant::now());
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sample = match read_sample() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cpu scheduling: cannot read /proc/self/task/*/schedstat; the class stays SCHED_BATCH");
                return;
            }
        };
        let Some(switch) = governor.observe(Instant::now(), sample) else {
            continue;
        };
        SWITCHES.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = set_all(switch.to) {
            tracing::warn!(class = switch.to.name(), error = %e, "cpu scheduling: cannot change the class; governor stopped");
            return;
        }
        match switch.mean_wait {
            Some(w) => tracing::info!(
                class = switch.to.name(),
                mean_wait_us = w.as_micros() as u64,
                "cpu scheduling: the CPUs are contended"
            ),
            None => tracing::info!(class = switch.to.name(), "cpu scheduling: trying again"),
        }
    }
}

#[cfg(test)]
mod tests;
