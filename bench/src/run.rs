//! The benchmark run: deploys every variant once on one node, then runs each
//! scenario against the variants interleaved (A B C A B C …, repeated), so that
//! machine drift hits all of them alike. Around every measurement window it
//! samples the sidecars' CPU time and RSS. The ingress scenarios run on the
//! gateway variants and on `direct` (their baseline); the others on the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_e2e::harness::Node;
use serde::{Deserialize, Serialize};

use crate::gateway::GATEWAY_PORTS;
use crate::load::{LoadResult, Mode};
use crate::procstat::{cpu_split, private_bytes, rss_bytes, sched_batch, syscalls};
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
    /// Client → gateway → server sidecar → app: runs on the gateway variants
    /// (and `direct`, the baseline of every scenario) instead of the sidecar ones.
    #[serde(default)]
    pub ingress: bool,
}

impl Scenario {
    /// Whether this scenario is measured on `v`.
    pub fn runs_on(&self, v: Variant) -> bool {
        v == Variant::Direct || self.ingress == v.is_gateway()
    }
}

/// Where and how the load generator sends one scenario's requests on one variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadTarget {
    pub port: u16,
    pub mode: Mode,
    /// `Host` to send instead of the service's `host:port`.
    pub authority: Option<&'static str>,
    /// Verify the server against the deployment's root, SNI = `authority`.
    pub tls: bool,
}

/// The gateway variants are called on the gateway's ports with
/// `Host: bench.example.com` (TLS with that SNI for `Https1`); the others on
/// the app's port for the mode. `direct` is the baseline of the HTTPS ingress
/// scenario over plain HTTP/1.1: the app does not speak TLS, so the added
/// figures of the gateways include terminating it, which is their job.
pub fn load_target(sc: &Scenario, v: Variant) -> LoadTarget {
    if v.is_gateway() {
        let https = sc.mode == Mode::Https1;
        return LoadTarget {
            port: if https {
                GATEWAY_PORTS.https
            } else {
                GATEWAY_PORTS.http
            },
            mode: sc.mode,
            authority: Some(crate::gateway::HOST),
            tls: https,
        };
    }
    let mode = match sc.mode {
        Mode::Https1 => Mode::Http1,
        m => m,
    };
    let port = match mode {
        Mode::Http1 | Mode::Churn | Mode::Https1 => PORTS.http,
        Mode::H2c => PORTS.h2,
        Mode::Tcp | Mode::TcpChurn => PORTS.tcp,
    };
    LoadTarget {
        port,
        mode,
        authority: None,
        tls: false,
    }
}

/// Name of the headline scenario (Istio's method: HTTP/1.1, 1 KB, 16 conns, 1000 rps).
pub const HEADLINE: &str = "http1-1kb-1000rps";
pub const SATURATION: &str = "saturation-http1";
/// A new TCP connection per exchange: the sidecars' handshake cost.
pub const TCP_CHURN: &str = "churn-tcp-500rps";
/// Ingress through the gateway's HTTP port, and HTTPS terminated at the gateway.
pub const INGRESS_HTTP: &str = "ingress-http1-1kb-1000rps";
pub const INGRESS_HTTPS: &str = "ingress-https-1kb-1000rps";

/// The scenarios of a mode: `(headline secs, other secs, warm-up secs)`.
pub fn scenarios(headline_s: f64, other_s: f64, warmup_s: f64, rate: f64) -> Vec<Scenario> {
    let s = |name: &str, mode, rate: Option<f64>, d| Scenario {
        name: name.to_string(),
        mode,
        conns: 16,
        rate,
        warmup_s,
        duration_s: d,
        ingress: false,
    };
    let ingress = |name: &str, mode| Scenario {
        ingress: true,
        ..s(name, mode, Some(rate), headline_s)
    };
    vec![
        s(HEADLINE, Mode::Http1, Some(rate), headline_s),
        s(SATURATION, Mode::Http1, None, other_s),
        s("h2c-1kb-1000rps", Mode::H2c, Some(rate), other_s),
        s("tcp-echo-1kb-1000rps", Mode::Tcp, Some(rate), other_s),
        s("churn-http1-500rps", Mode::Churn, Some(rate / 2.0), other_s),
        s(TCP_CHURN, Mode::TcpChurn, Some(rate / 2.0), other_s),
        ingress(INGRESS_HTTP, Mode::Http1),
        ingress(INGRESS_HTTPS, Mode::Https1),
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
    /// Share of the window's 100 ms samples in which the sidecar ran in
    /// `SCHED_BATCH` (client, server): the class its governor chose.
    #[serde(default)]
    pub batch_share: [f64; 2],
}

/// Spans of one run of a tracing variant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpanFigures {
    /// Spans the sink got from the window's opening until `settle` after it
    /// closed (export is asynchronous).
    pub received: u64,
    /// `received` per 1000 completed requests (2000 when every request is
    /// traced: a CLIENT and a SERVER span each).
    pub per_1000: f64,
    /// Spans both sidecars counted dropped over the whole run.
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub rep: usize,
    pub scenario: String,
    pub variant: Variant,
    pub mtls: Mtls,
    pub load: LoadResult,
    pub sidecars: Option<SidecarFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<SpanFigures>,
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
    // A variant no selected scenario runs on is not deployed.
    let variants: Vec<Variant> = plan
        .variants
        .iter()
        .copied()
        .filter(|v| {
            let used = plan.scenarios.iter().any(|s| s.runs_on(*v));
            if !used {
                eprintln!(
                    "mesh-bench: {} skipped: no selected scenario runs on it",
                    v.name()
                );
            }
            used
        })
        .collect();
    let ca = if variants.iter().any(|v| v.mtls()) {
        Some(MeshCa::start(&node, bins).context("starting the mesh CA for the mTLS variants")?)
    } else {
        None
    };
    let mut deps = Vec::new();
    for v in &variants {
        interrupted()?;
        let t = Instant::now();
        let d = if v.is_gateway() {
            crate::gateway::start(&node, *v, bins)
        } else {
            Deployment::start(&node, *v, bins, ca.as_ref())
        };
        let d = d.with_context(|| format!("starting the {} variant", v.name()))?;
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
    let per_rep: usize = plan
        .scenarios
        .iter()
        .map(|sc| deps.iter().filter(|d| sc.runs_on(d.variant)).count())
        .sum();
    let total = plan.reps * per_rep;
    let mut n = 0;
    for rep in 1..=plan.reps {
        for sc in &plan.scenarios {
            for d in deps.iter_mut().filter(|d| sc.runs_on(d.variant)) {
                interrupted()?;
                n += 1;
                let rec = run_one(d, sc, rep, plan.settle)
                    .with_context(|| format!("{} on {}", sc.name, d.variant.name()))?;
                eprintln!(
                    "[{n}/{total}] rep {rep} {:<25} {:<22} {}",
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
            " | cpu {:.3}s/1k rss {}+{} batch {:.0}%+{:.0}%",
            f.cpu_s_per_1000,
            mib(f.rss_load_peak[0]),
            mib(f.rss_load_peak[1]),
            f.batch_share[0] * 100.0,
            f.batch_share[1] * 100.0
        );
    }
    if let Some(t) = &r.spans {
        s += &format!(
            " | spans {} ({:.0}/1k req) dropped {}",
            t.received, t.per_1000, t.dropped
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

/// Spans both sidecars of `d` have dropped (`mesh_tracing_spans_dropped_total`).
fn dropped_spans(d: &Deployment) -> anyhow::Result<u64> {
    let mut n = 0;
    for pod in [&d.client, &d.server] {
        let out = pod.exec(
            0,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "http://127.0.0.1:15090/stats/prometheus",
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        n += text
            .lines()
            .find_map(|l| l.strip_prefix("mesh_tracing_spans_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .with_context(|| format!("no mesh_tracing_spans_dropped_total in {}", pod.name()))?
            as u64;
    }
    Ok(n)
}

fn run_one(
    d: &mut Deployment,
    sc: &Scenario,
    rep: usize,
    settle: Duration,
) -> anyhow::Result<RunRecord> {
    let bench = self_exe()?;
    let lt = load_target(sc, d.variant);
    let target = format!("{}:{}", d.target_ip, lt.port);
    let rate = sc.rate.map(|r| r.to_string());
    let (warm, dur) = (sc.warmup_s.to_string(), sc.duration_s.to_string());
    let conns = sc.conns.to_string();
    let mode = serde_json::to_value(lt.mode)?
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
    if let Some(a) = lt.authority {
        argv.extend(["--authority", a]);
    }
    let root = d.ca_root.as_ref().map(|p| p.display().to_string());
    if lt.tls {
        let root = root.as_deref().context("no root for the TLS load")?;
        argv.extend(["--ca-file", root]);
    }
    let pids = d.sidecar_pids;
    let rss_before = pids.map(|(c, s)| [rss_bytes(c).unwrap_or(0), rss_bytes(s).unwrap_or(0)]);
    let dropped0 = match d.sink {
        Some(_) => Some(dropped_spans(d)?),
        None => None,
    };
    let mut p = d.client.spawn(APP_UID, &argv)?;
    let wait = Duration::from_secs_f64(sc.warmup_s + 15.0);
    p.wait_for_line("load phase=measure", wait)?;
    let cpu0 = pids.map(|(c, s)| [usage(c), usage(s)]);
    let spans0 = d.sink.as_ref().map(|s| s.spans());
    let stop = Arc::new(AtomicBool::new(false));
    // [rss client, rss server, private client, private server, samples,
    // client samples in SCHED_BATCH, server samples in SCHED_BATCH]
    let peak = Arc::new(Mutex::new([0u64; 7]));
    let sampler = pids.map(|(c, s)| {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut pk = peak.lock().expect("peak lock");
                pk[0] = pk[0].max(rss_bytes(c).unwrap_or(0));
                pk[1] = pk[1].max(rss_bytes(s).unwrap_or(0));
                pk[2] = pk[2].max(private_bytes(c).unwrap_or(0));
                pk[3] = pk[3].max(private_bytes(s).unwrap_or(0));
                pk[4] += 1;
                pk[5] += u64::from(sched_batch(c).unwrap_or(false));
                pk[6] += u64::from(sched_batch(s).unwrap_or(false));
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
    let spans = match (&d.sink, spans0, dropped0) {
        (Some(sink), Some(s0), Some(d0)) => {
            let received = sink.spans() - s0;
            Some(SpanFigures {
                received,
                per_1000: received as f64 / load.ok.max(1) as f64 * 1000.0,
                dropped: dropped_spans(d)?.saturating_sub(d0),
            })
        }
        _ => None,
    };
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
                batch_share: [
                    pk[5] as f64 / pk[4].max(1) as f64,
                    pk[6] as f64 / pk[4].max(1) as f64,
                ],
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
        spans,
    })
}

/// This program's own path (it is also the app and the load generator).
pub fn self_exe() -> std::io::Result<std::path::PathBuf> {
    std::env::current_exe()
}

#[cfg(test)]
mod tests;
