//! The benchmark run: deploys every variant once on one node, then runs each
//! scenario against the variants interleaved (A B C A B C …, repeated), so that
//! machine drift hits all of them alike. Around every measurement window it
//! samples the sidecars' CPU time and RSS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_e2e::harness::Node;
use serde::{Deserialize, Serialize};

use crate::load::{LoadResult, Mode};
use crate::procstat::{cpu_split, private_bytes, rss_bytes, syscalls};
use crate::topology::{Bins, Deployment, MeshCa, Variant, APP_UID, PORTS};

/// Set by Ctrl-C / SIGTERM; checked between runs.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// One load shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub mode: Mode,
    pub conns: usize,
    /// Requests per second (open loop); `None` is a closed-loop saturation run.
    pub rate: Option<f64>,
    pub warmup_s: f64,
    pub duration_s: f64,
}

impl Scenario {
    fn port(&self) -> u16 {
        match self.mode {
            Mode::Http1 | Mode::Churn => PORTS.http,
            Mode::H2c => PORTS.h2,
            Mode::Tcp | Mode::TcpChurn => PORTS.tcp,
        }
    }
}

/// Name of the headline scenario (Istio's method: HTTP/1.1, 1 KB, 16 conns, 1000 rps).
pub const HEADLINE: &str = "http1-1kb-1000rps";
pub const SATURATION: &str = "saturation-http1";
/// A new TCP connection per exchange: the sidecars' handshake cost.
pub const TCP_CHURN: &str = "churn-tcp-500rps";

/// The scenarios of a mode: `(headline secs, other secs, warm-up secs)`.
pub fn scenarios(headline_s: f64, other_s: f64, warmup_s: f64, rate: f64) -> Vec<Scenario> {
    let s = |name: &str, mode, rate: Option<f64>, d| Scenario {
        name: name.to_string(),
        mode,
        conns: 16,
        rate,
        warmup_s,
        duration_s: d,
    };
    vec![
        s(HEADLINE, Mode::Http1, Some(rate), headline_s),
        s(SATURATION, Mode::Http1, None, other_s),
        s("h2c-1kb-1000rps", Mode::H2c, Some(rate), other_s),
        s("tcp-echo-1kb-1000rps", Mode::Tcp, Some(rate), other_s),
        s("churn-http1-500rps", Mode::Churn, Some(rate / 2.0), other_s),
        s(TCP_CHURN, Mode::TcpChurn, Some(rate / 2.0), other_s),
    ]
}

/// Whether transport security between the sidecars is on. Only `Off` exists
/// until the security issue lands; the field is in every record so that the
/// mTLS-on variants slot in beside these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mtls {
    Off,
    On,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub variants: Vec<Variant>,
    pub scenarios: Vec<Scenario>,
    pub reps: usize,
    /// Pause after a run before "after load" RSS is read.
    pub settle: Duration,
}

/// Sidecar figures of one run (client, server).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SidecarFigures {
    pub cpu_s: [f64; 2],
    /// CPU seconds of both sidecars per 1000 completed requests.
    pub cpu_s_per_1000: f64,
    pub rss_before: [u64; 2],
    pub rss_load_peak: [u64; 2],
    pub rss_after: [u64; 2],
    /// User-mode part of `cpu_s` (the rest is the kernel's).
    #[serde(default)]
    pub cpu_user_s: [f64; 2],
    /// Read and write system calls during the window (client, server).
    #[serde(default)]
    pub syscalls: [u64; 2],
    /// Peak private memory under load (client, server).
    #[serde(default)]
    pub private_load_peak: [u64; 2],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub rep: usize,
    pub scenario: String,
    pub variant: Variant,
    pub mtls: Mtls,
    pub load: LoadResult,
    pub sidecars: Option<SidecarFigures>,
}

/// Idle RSS of a variant's sidecars (client, server), read after start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Idle {
    pub variant: Variant,
    pub rss: [u64; 2],
    /// Private memory (not shared with other processes), bytes.
    #[serde(default)]
    pub private: [u64; 2],
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Raw {
    pub idle: Vec<Idle>,
    pub runs: Vec<RunRecord>,
    pub interrupted: bool,
}

fn interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs the whole plan. Errors (and Ctrl-C) return what was measured so far
/// alongside the error; every pod and process is gone when this returns.
pub fn execute(plan: &Plan, bins: &Bins) -> (Raw, Option<anyhow::Error>) {
    let mut raw = Raw::default();
    let err = execute_into(plan, bins, &mut raw).err();
    raw.interrupted = err.is_some();
    (raw, err)
}

fn execute_into(plan: &Plan, bins: &Bins, raw: &mut Raw) -> anyhow::Result<()> {
    let node = Node::new()?;
    let ca = if plan.variants.iter().any(|v| v.mtls()) {
        Some(MeshCa::start(&node, bins).context("starting the mesh CA for the mTLS variants")?)
    } else {
        None
    };
    let mut deps = Vec::new();
    for v in &plan.variants {
        interrupted()?;
        let t = Instant::now();
        let d = Deployment::start(&node, *v, bins, ca.as_ref())
            .with_context(|| format!("starting the {} variant", v.name()))?;
        eprintln!(
            "mesh-bench: {} ready in {:.1}s",
            v.name(),
            t.elapsed().as_secs_f64()
        );
        deps.push(d);
    }
    std::thread::sleep(plan.settle);
    for d in &deps {
        if let Some((c, s)) = d.sidecar_pids {
            let rss = [rss_bytes(c).unwrap_or(0), rss_bytes(s).unwrap_or(0)];
            let private = [private_bytes(c).unwrap_or(0), private_bytes(s).unwrap_or(0)];
            eprintln!(
                "mesh-bench: {} idle RSS {} / {} (private {} / {})",
                d.variant.name(),
                mib(rss[0]),
                mib(rss[1]),
                mib(private[0]),
                mib(private[1])
            );
            raw.idle.push(Idle {
                variant: d.variant,
                rss,
                private,
            });
        }
    }
    let total = plan.reps * plan.scenarios.len() * deps.len();
    let mut n = 0;
    for rep in 1..=plan.reps {
        for sc in &plan.scenarios {
            for d in &mut deps {
                interrupted()?;
                n += 1;
                let rec = run_one(d, sc, rep, plan.settle)
                    .with_context(|| format!("{} on {}", sc.name, d.variant.name()))?;
                eprintln!(
                    "[{n}/{total}] rep {rep} {:<22} {:<10} {}",
                    sc.name,
                    d.variant.name(),
                    line(&rec)
                );
                raw.runs.push(rec);
                if !d.sidecars_alive() {
                    bail!("a {} sidecar died during {}", d.variant.name(), sc.name);
                }
            }
        }
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

fn line(r: &RunRecord) -> String {
    let l = &r.load.latency_us;
    let mut s = format!(
        "rps {:>7.0} p50 {:>6.0}us p99 {:>6.0}us p99.9 {:>6.0}us err {}",
        r.load.rps, l.p50, l.p99, l.p999, r.load.errors
    );
    if let Some(f) = &r.sidecars {
        s += &format!(
            " | cpu {:.3}s/1k rss {}+{}",
            f.cpu_s_per_1000,
            mib(f.rss_load_peak[0]),
            mib(f.rss_load_peak[1])
        );
    }
    s
}

/// A sidecar's counters at one instant.
struct Usage {
    user: f64,
    sys: f64,
    syscalls: u64,
}

fn usage(pid: u32) -> Usage {
    let (user, sys) = cpu_split(pid).unwrap_or((0.0, 0.0));
    Usage {
        user,
        sys,
        syscalls: syscalls(pid).unwrap_or(0),
    }
}

fn run_one(
    d: &mut Deployment,
    sc: &Scenario,
    rep: usize,
    settle: Duration,
) -> anyhow::Result<RunRecord> {
    let bench = crate::self_exe()?;
    let target = format!("{}:{}", d.target_ip, sc.port());
    let rate = sc.rate.map(|r| r.to_string());
    let (warm, dur) = (sc.warmup_s.to_string(), sc.duration_s.to_string());
    let conns = sc.conns.to_string();
    let mode = serde_json::to_value(sc.mode)?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut argv: Vec<&str> = vec![
        bench.to_str().context("bench path")?,
        "load",
        "--target",
        &target,
        "--mode",
        &mode,
        "--conns",
        &conns,
        "--warmup",
        &warm,
        "--duration",
        &dur,
        "--size",
        "1024",
    ];
    if let Some(r) = &rate {
        argv.extend(["--rate", r.as_str()]);
    }
    let pids = d.sidecar_pids;
    let rss_before = pids.map(|(c, s)| [rss_bytes(c).unwrap_or(0), rss_bytes(s).unwrap_or(0)]);
    let mut p = d.client.spawn(APP_UID, &argv)?;
    let wait = Duration::from_secs_f64(sc.warmup_s + 15.0);
    p.wait_for_line("load phase=measure", wait)?;
    let cpu0 = pids.map(|(c, s)| [usage(c), usage(s)]);
    let stop = Arc::new(AtomicBool::new(false));
    // [rss client, rss server, private client, private server]
    let peak = Arc::new(Mutex::new([0u64; 4]));
    let sampler = pids.map(|(c, s)| {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut pk = peak.lock().expect("peak lock");
                pk[0] = pk[0].max(rss_bytes(c).unwrap_or(0));
                pk[1] = pk[1].max(rss_bytes(s).unwrap_or(0));
                pk[2] = pk[2].max(private_bytes(c).unwrap_or(0));
                pk[3] = pk[3].max(private_bytes(s).unwrap_or(0));
                drop(pk);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    let done = p.wait_for_line(
        "load phase=done",
        Duration::from_secs_f64(sc.duration_s + 15.0),
    );
    let cpu1 = pids.map(|(c, s)| [usage(c), usage(s)]);
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = sampler {
        let _ = t.join();
    }
    done?;
    let line = p.wait_for_line("result ", Duration::from_secs(20))?;
    let load: LoadResult = serde_json::from_str(line.trim_start_matches("result "))
        .with_context(|| format!("load generator said {line:?}"))?;
    std::thread::sleep(settle);
    let sidecars = match (pids, cpu0, cpu1, rss_before) {
        (Some((c, s)), Some(a), Some(b), Some(before)) => {
            let pk = *peak.lock().expect("peak lock");
            let total = |u: &Usage| u.user + u.sys;
            let cpu_s = [total(&b[0]) - total(&a[0]), total(&b[1]) - total(&a[1])];
            Some(SidecarFigures {
                cpu_user_s: [b[0].user - a[0].user, b[1].user - a[1].user],
                syscalls: [
                    b[0].syscalls.saturating_sub(a[0].syscalls),
                    b[1].syscalls.saturating_sub(a[1].syscalls),
                ],
                cpu_s,
                cpu_s_per_1000: (cpu_s[0] + cpu_s[1]) / (load.ok.max(1) as f64) * 1000.0,
                rss_before: before,
                rss_load_peak: [pk[0], pk[1]],
                private_load_peak: [pk[2], pk[3]],
                rss_after: [rss_bytes(c).unwrap_or(0), rss_bytes(s).unwrap_or(0)],
            })
        }
        _ => None,
    };
    Ok(RunRecord {
        rep,
        scenario: sc.name.clone(),
        variant: d.variant,
        mtls: if d.variant.mtls() {
            Mtls::On
        } else {
            Mtls::Off
        },
        load,
        sidecars,
    })
}
