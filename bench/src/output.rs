//! The results folder: `results.json` (every run, the medians, the plan and the
//! machine), `results.md` (the tables) and `chart.svg`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::report::{ingress_ratios, markdown, summarize};
use crate::run::{Plan, Raw};

/// Where and how the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub date: String,
    pub machine: String,
    pub command: String,
    pub mode: String,
    pub mtls: String,
    pub envoy: String,
    pub load_generator: String,
}

impl Meta {
    pub fn collect(mode: &str, envoy: &str) -> Meta {
        let sh = |cmd: &str| {
            std::process::Command::new("sh")
                .args(["-c", cmd])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
        Meta {
            date: sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
            machine: format!("{}; {} cores; {}; {}", cpu.trim(), sh("nproc"), sh("free -g | awk '/Mem:/{print $2\" GiB\"}'"), sh("uname -sr")),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            mode: mode.to_string(),
            mtls: "off for direct/envoy/mesh-proxy and between gateway and sidecar in envoy-gateway/mesh-proxy-gateway (HTTPS is terminated at the gateway); on (TLS 1.3, certificates from one root, server requires client certificates) for envoy-mtls/mesh-proxy-mtls".into(),
            envoy: envoy.to_string(),
            load_generator: "mesh-bench load: own wrk2-style open loop with coordinated-omission correction; closed loop for saturation".into(),
        }
    }
}

#[derive(Serialize)]
struct Doc<'a> {
    meta: &'a Meta,
    scenarios: &'a [crate::run::Scenario],
    reps: usize,
    summary: &'a [crate::report::Summary],
    /// mesh-proxy router ÷ Envoy gateway per ingress scenario (issue 16).
    ingress: &'a [crate::report::IngressRatio],
    idle: &'a [crate::run::Idle],
    runs: &'a [crate::run::RunRecord],
    interrupted: bool,
}

/// Writes the three files into `dir` and returns their paths (json, md, svg).
pub fn write_results(
    dir: &Path,
    meta: &Meta,
    plan: &Plan,
    raw: &Raw,
) -> std::io::Result<[PathBuf; 3]> {
    std::fs::create_dir_all(dir)?;
    let sums = summarize(raw);
    let ingress = ingress_ratios(&sums);
    let doc = Doc {
        meta,
        scenarios: &plan.scenarios,
        reps: plan.reps,
        summary: &sums,
        ingress: &ingress,
        idle: &raw.idle,
        runs: &raw.runs,
        interrupted: raw.interrupted,
    };
    let json = dir.join("results.json");
    std::fs::write(
        &json,
        serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?,
    )?;
    let header = format!(
        "# mesh-bench results\n\n- date: {}\n- machine: {}\n- command: `{}`\n- mode: {}\n- mTLS: {}\n- Envoy: {}\n- load: {}\n{}",
        meta.date,
        meta.machine,
        meta.command,
        meta.mode,
        meta.mtls,
        meta.envoy,
        meta.load_generator,
        if raw.interrupted { "- **interrupted: partial results**\n" } else { "" }
    );
    let md = dir.join("results.md");
    let headline = plan
        .scenarios
        .iter()
        .find(|s| s.name == crate::run::HEADLINE)
        .map(|s| {
            format!(
                "HTTP/1.1, 1 KB responses, {} connections, {} req/s",
                s.conns,
                s.rate.unwrap_or_default()
            )
        })
        .unwrap_or_default();
    std::fs::write(&md, markdown(&sums, &header, &headline))?;
    let svg = dir.join("chart.svg");
    std::fs::write(
        &svg,
        crate::svg::chart(
            &sums,
            &format!("{} · {} · {}", meta.date, meta.mode, meta.machine),
        ),
    )?;
    Ok([json, md, svg])
}
