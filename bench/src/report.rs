//! Turns the raw runs into medians per (scenario, variant), added latency over
//! `direct`, the mesh-proxy ÷ Envoy ratios against the issues' goals (issue 17
//! for the sidecars' latency, CPU, idle RSS and efficiency; issue 10 for the
//! rest; issue 16 for the ingress gateways), and the Markdown table.

use serde::{Deserialize, Serialize};

use crate::run::{Raw, HEADLINE, INGRESS_HTTP, INGRESS_HTTPS, SATURATION, TCP_CHURN};
use crate::topology::Variant;

pub(crate) use crate::summary::ms;
pub use crate::summary::{find, Summary};

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn summarize(raw: &Raw) -> Vec<Summary> {
    let mut keys: Vec<(String, Variant)> = Vec::new();
    for r in &raw.runs {
        if !keys.contains(&(r.scenario.clone(), r.variant)) {
            keys.push((r.scenario.clone(), r.variant));
        }
    }
    let mut out: Vec<Summary> = keys
        .iter()
        .map(|(sc, v)| {
            let runs: Vec<_> = raw
                .runs
                .iter()
                .filter(|r| &r.scenario == sc && r.variant == *v)
                .collect();
            let lat = |f: fn(&crate::load::Percentiles) -> f64| {
                median(runs.iter().map(|r| f(&r.load.latency_us)).collect())
            };
            let side: Vec<_> = runs.iter().filter_map(|r| r.sidecars.as_ref()).collect();
            let opt = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
            let idle = raw
                .idle
                .iter()
                .find(|i| i.variant == *v)
                .map(|i| i.rss[0].max(i.rss[1]));
            let private_idle = raw
                .idle
                .iter()
                .find(|i| i.variant == *v)
                .map(|i| i.private[0].max(i.private[1]))
                .filter(|p| *p > 0);
            Summary {
                scenario: sc.clone(),
                variant: Some(*v),
                runs: runs.len(),
                rps: median(runs.iter().map(|r| r.load.rps).collect()),
                errors: runs.iter().map(|r| r.load.errors).sum(),
                latency_us: [
                    lat(|p| p.p50),
                    lat(|p| p.p90),
                    lat(|p| p.p99),
                    lat(|p| p.p999),
                ],
                added_us: None,
                cpu_s_per_1000: opt(side.iter().map(|s| s.cpu_s_per_1000).collect()),
                kernel_share: opt(side
                    .iter()
                    .filter(|s| s.cpu_s[0] + s.cpu_s[1] > 0.0)
                    .map(|s| {
                        let all = s.cpu_s[0] + s.cpu_s[1];
                        1.0 - (s.cpu_user_s[0] + s.cpu_user_s[1]) / all
                    })
                    .collect()),
                syscalls_per_req: opt(runs
                    .iter()
                    .filter_map(|r| {
                        let s = r.sidecars.as_ref()?;
                        let n = s.syscalls[0] + s.syscalls[1];
                        (n > 0).then(|| n as f64 / r.load.ok.max(1) as f64)
                    })
                    .collect()),
                req_per_cpu_s: opt(side
                    .iter()
                    .map(|s| 1000.0 / s.cpu_s_per_1000.max(1e-9))
                    .collect()),
                rss_idle: idle,
                rss_load: opt(side
                    .iter()
                    .map(|s| s.rss_load_peak[0].max(s.rss_load_peak[1]) as f64)
                    .collect())
                .map(|b| b as u64),
                private_idle,
                private_load: opt(side
                    .iter()
                    .map(|s| s.private_load_peak[0].max(s.private_load_peak[1]) as f64)
                    .filter(|p| *p > 0.0)
                    .collect())
                .map(|b| b as u64),
                rss_after: opt(side
                    .iter()
                    .map(|s| s.rss_after[0].max(s.rss_after[1]) as f64)
                    .collect())
                .map(|b| b as u64),
                spans_per_1000: opt(runs
                    .iter()
                    .filter_map(|r| Some(r.spans.as_ref()?.per_1000))
                    .collect()),
                spans_dropped: runs
                    .iter()
                    .filter_map(|r| Some(r.spans.as_ref()?.dropped))
                    .reduce(|a, b| a + b),
            }
        })
        .collect();
    let direct: Vec<(String, [f64; 4])> = out
        .iter()
        .filter(|s| s.variant == Some(Variant::Direct))
        .map(|s| (s.scenario.clone(), s.latency_us))
        .collect();
    for s in &mut out {
        if let Some((_, d)) = direct.iter().find(|(sc, _)| *sc == s.scenario) {
            let l = s.latency_us;
            s.added_us = Some([l[0] - d[0], l[1] - d[1], l[2] - d[2], l[3] - d[3]]);
        }
    }
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}
fn ratio(m: Option<f64>, e: Option<f64>) -> Option<f64> {
    match (m, e) {
        (Some(m), Some(e)) if e.abs() > f64::EPSILON => Some(m / e),
        _ => None,
    }
}

struct Row {
    figure: &'static str,
    cells: [String; 3],
    ratio: Option<f64>,
    goal: String,
}

/// The headline table: one row per figure, one column per variant, the
/// mesh-proxy ÷ Envoy ratio and the goal with whether it is met. `pair` is
/// (Envoy, mesh-proxy) with mTLS off or on; `direct` is the baseline of both.
fn headline_rows(sums: &[Summary], pair: (Variant, Variant)) -> Vec<Row> {
    let (envoy, mesh) = pair;
    let vs = [Variant::Direct, envoy, mesh];
    let h = |v| find(sums, HEADLINE, v);
    let sat = |v| find(sums, SATURATION, v);
    let mut rows = Vec::new();
    let names = ["p50", "p90", "p99", "p99.9"];
    let lat_names = ["latency p50", "latency p90", "latency p99", "latency p99.9"];
    let add_names = ["added p50", "added p90", "added p99", "added p99.9"];
    #[allow(clippy::needless_range_loop)] // `i` indexes four parallel arrays
    for i in 0..4 {
        let cell = |v| {
            h(v).map(|s| ms(s.latency_us[i]))
                .unwrap_or_else(|| "–".into())
        };
        rows.push(Row {
            figure: lat_names[i],
            cells: vs.map(cell),
            ratio: ratio(
                h(mesh).map(|s| s.latency_us[i]),
                h(envoy).map(|s| s.latency_us[i]),
            ),
            goal: String::new(),
        });
    }
    for i in 0..4 {
        let get = |v| h(v).and_then(|s| s.added_us).map(|a| a[i]);
        let r = ratio(get(mesh), get(envoy));
        // Issue 17: added p50 ≤ 0.4×, p99 ≤ 0.3×, p99.9 ≤ 0.5× Envoy's.
        let goal = match names[i] {
            "p50" => goal_le(r, 0.4),
            "p99" => goal_le(r, 0.3),
            "p99.9" => goal_le(r, 0.5),
            _ => String::new(),
        };
        rows.push(Row {
            figure: add_names[i],
            cells: vs.map(|v| get(v).map(ms).unwrap_or_else(|| "–".into())),
            ratio: r,
            goal,
        });
    }
    let cpu = |v| h(v).and_then(|s| s.cpu_s_per_1000);
    let r = ratio(cpu(mesh), cpu(envoy));
    rows.push(Row {
        figure: "sidecar CPU s / 1000 req (both)",
        cells: vs.map(|v| {
            cpu(v)
                .map(|c| format!("{c:.4}"))
                .unwrap_or_else(|| "–".into())
        }),
        ratio: r,
        goal: goal_le(r, 0.35),
    });
    rows.push(kernel_row(vs.map(|v| h(v).and_then(|s| s.kernel_share))));
    let sc = |v| h(v).and_then(|s| s.syscalls_per_req);
    rows.push(Row {
        figure: "read/write-family syscalls / request (both; not send/recv)",
        cells: vs.map(|v| {
            sc(v)
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "–".into())
        }),
        ratio: ratio(sc(mesh), sc(envoy)),
        goal: String::new(),
    });
    type Field = fn(&Summary) -> Option<u64>;
    type RssRow = (&'static str, Field, Option<u64>);
    let rss_rows: [RssRow; 3] = [
        ("RSS per sidecar, idle", |s| s.rss_idle, Some(6)),
        ("RSS per sidecar, under load", |s| s.rss_load, Some(16)),
        ("RSS per sidecar, after load", |s| s.rss_after, None),
    ];
    let private_rows: [(&'static str, Field); 2] = [
        ("private memory per sidecar, idle", |s| s.private_idle),
        ("private memory per sidecar, under load", |s| s.private_load),
    ];
    for (figure, f, cap) in rss_rows {
        let get = |v| h(v).and_then(f);
        let r = ratio(get(mesh).map(|b| b as f64), get(envoy).map(|b| b as f64));
        let mut goal = goal_le(r, 0.3);
        if let (Some(cap), Some(m)) = (cap, get(mesh)) {
            let ok = m <= cap * 1048576;
            goal += &format!("; ≤ {cap} MiB: {}", if ok { "met" } else { "**missed**" });
        }
        rows.push(Row {
            figure,
            cells: vs.map(|v| get(v).map(mib).unwrap_or_else(|| "–".into())),
            ratio: r,
            goal,
        });
    }
    for (figure, f) in private_rows {
        let get = |v| h(v).and_then(f);
        rows.push(Row {
            figure,
            cells: vs.map(|v| get(v).map(mib).unwrap_or_else(|| "–".into())),
            ratio: ratio(get(mesh).map(|b| b as f64), get(envoy).map(|b| b as f64)),
            goal: String::new(),
        });
    }
    let rps = |v| sat(v).map(|s| s.rps);
    let r = ratio(rps(mesh), rps(envoy));
    rows.push(Row {
        figure: "saturation req/s (closed loop, 16 conns)",
        cells: vs.map(|v| {
            rps(v)
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "–".into())
        }),
        ratio: r,
        goal: goal_ge(r, 2.0),
    });
    // One new connection per exchange: with mTLS on, one handshake between the
    // sidecars each, so this is handshakes per sidecar CPU-second.
    let churn = |v| find(sums, TCP_CHURN, v).and_then(|s| s.req_per_cpu_s);
    rows.push(Row {
        figure: "new TCP connections per sidecar CPU-second (churn-tcp)",
        cells: vs.map(|v| {
            churn(v)
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "–".into())
        }),
        ratio: ratio(churn(mesh), churn(envoy)),
        goal: String::new(),
    });
    let eff = |v| sat(v).and_then(|s| s.req_per_cpu_s);
    let r = ratio(eff(mesh), eff(envoy));
    rows.push(Row {
        figure: "saturation req per sidecar CPU-second",
        cells: vs.map(|v| {
            eff(v)
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "–".into())
        }),
        ratio: r,
        goal: goal_ge(r, 2.5),
    });
    rows
}

/// Issue 16's goal: mesh-proxy's added p99 and CPU per 1000 requests through
/// the gateway at most this share of Envoy's.
pub const INGRESS_GOAL: f64 = 0.5;

/// The ingress scenarios and how the report names them.
pub const INGRESS: [(&str, &str); 2] = [
    (INGRESS_HTTP, "HTTP"),
    (INGRESS_HTTPS, "HTTPS terminated at the gateway"),
];

/// mesh-proxy router ÷ Envoy gateway on one ingress scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngressRatio {
    pub scenario: String,
    /// Added p99 over `direct`, mesh-proxy ÷ Envoy.
    pub added_p99: Option<f64>,
    /// CPU s / 1000 requests of gateway + server sidecar, mesh-proxy ÷ Envoy.
    pub cpu_per_1000: Option<f64>,
    pub goal: f64,
}

/// The ratios of every ingress scenario that ran on a gateway variant.
pub fn ingress_ratios(sums: &[Summary]) -> Vec<IngressRatio> {
    INGRESS
        .iter()
        .filter(|(sc, _)| {
            find(sums, sc, Variant::EnvoyGateway).is_some()
                || find(sums, sc, Variant::MeshProxyGateway).is_some()
        })
        .map(|(sc, _)| {
            let added = |v| find(sums, sc, v).and_then(|s| s.added_us).map(|a| a[2]);
            let cpu = |v| find(sums, sc, v).and_then(|s| s.cpu_s_per_1000);
            IngressRatio {
                scenario: sc.to_string(),
                added_p99: ratio(
                    added(Variant::MeshProxyGateway),
                    added(Variant::EnvoyGateway),
                ),
                cpu_per_1000: ratio(cpu(Variant::MeshProxyGateway), cpu(Variant::EnvoyGateway)),
                goal: INGRESS_GOAL,
            }
        })
        .collect()
}

/// One ingress table: direct, Envoy gateway, mesh-proxy router; the proxies'
/// figures are the gateway's and the server sidecar's together.
fn ingress_rows(sums: &[Summary], scenario: &str) -> Vec<Row> {
    let vs = [
        Variant::Direct,
        Variant::EnvoyGateway,
        Variant::MeshProxyGateway,
    ];
    let get = |v| find(sums, scenario, v);
    let dash = || "–".to_string();
    let mut rows = Vec::new();
    for (i, name) in [(0, "latency p50"), (2, "latency p99"), (3, "latency p99.9")] {
        let lat = |v| get(v).map(|s| s.latency_us[i]);
        rows.push(Row {
            figure: name,
            cells: vs.map(|v| lat(v).map(ms).unwrap_or_else(dash)),
            ratio: ratio(lat(Variant::MeshProxyGateway), lat(Variant::EnvoyGateway)),
            goal: String::new(),
        });
    }
    for (i, name) in [(0, "added p50"), (2, "added p99"), (3, "added p99.9")] {
        let add = |v| get(v).and_then(|s| s.added_us).map(|a| a[i]);
        let r = ratio(add(Variant::MeshProxyGateway), add(Variant::EnvoyGateway));
        rows.push(Row {
            figure: name,
            cells: vs.map(|v| match v {
                Variant::Direct => dash(),
                _ => add(v).map(ms).unwrap_or_else(dash),
            }),
            ratio: r,
            goal: if i == 2 {
                goal_le(r, INGRESS_GOAL)
            } else {
                String::new()
            },
        });
    }
    let rps = |v| get(v).map(|s| s.rps);
    rows.push(Row {
        figure: "req/s achieved",
        cells: vs.map(|v| rps(v).map(|x| format!("{x:.0}")).unwrap_or_else(dash)),
        ratio: None,
        goal: String::new(),
    });
    let cpu = |v| get(v).and_then(|s| s.cpu_s_per_1000);
    let r = ratio(cpu(Variant::MeshProxyGateway), cpu(Variant::EnvoyGateway));
    rows.push(Row {
        figure: "CPU s / 1000 req (gateway + server sidecar)",
        cells: vs.map(|v| cpu(v).map(|c| format!("{c:.4}")).unwrap_or_else(dash)),
        ratio: r,
        goal: goal_le(r, INGRESS_GOAL),
    });
    rows.push(kernel_row(vs.map(|v| get(v).and_then(|s| s.kernel_share))));
    let rss = |v| get(v).and_then(|s| s.rss_load);
    rows.push(Row {
        figure: "RSS under load (larger of gateway and sidecar)",
        cells: vs.map(|v| rss(v).map(mib).unwrap_or_else(dash)),
        ratio: ratio(
            rss(Variant::MeshProxyGateway).map(|b| b as f64),
            rss(Variant::EnvoyGateway).map(|b| b as f64),
        ),
        goal: String::new(),
    });
    rows
}

/// The kernel's share of the proxies' CPU, per column.
fn kernel_row(shares: [Option<f64>; 3]) -> Row {
    Row {
        figure: "kernel share of that CPU",
        cells: shares.map(|k| {
            k.map(|k| format!("{:.0} %", k * 100.0))
                .unwrap_or_else(|| "–".into())
        }),
        ratio: None,
        goal: String::new(),
    }
}

fn table(rows: &[Row], columns: [&str; 3]) -> String {
    let mut md = format!(
        "| figure | {} | {} | {} | mesh-proxy ÷ Envoy | goal |\n|---|---:|---:|---:|---:|---|\n",
        columns[0], columns[1], columns[2]
    );
    for r in rows {
        let ratio = r
            .ratio
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "–".into());
        md += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.figure, r.cells[0], r.cells[1], r.cells[2], ratio, r.goal
        );
    }
    md
}

fn goal_le(r: Option<f64>, max: f64) -> String {
    match r {
        Some(r) if r <= max => format!("≤ {max}×: met"),
        Some(_) => format!("≤ {max}×: **missed**"),
        None => format!("≤ {max}×: n/a"),
    }
}
fn goal_ge(r: Option<f64>, min: f64) -> String {
    match r {
        Some(r) if r >= min => format!("≥ {min}×: met"),
        Some(_) => format!("≥ {min}×: **missed**"),
        None => format!("≥ {min}×: n/a"),
    }
}

/// The Markdown report.
pub fn markdown(sums: &[Summary], header: &str, headline: &str) -> String {
    let mut md = String::from(header);
    for (pair, tls) in [
        ((Variant::Envoy, Variant::MeshProxy), "off"),
        ((Variant::EnvoyMtls, Variant::MeshProxyMtls), "on"),
    ] {
        if find(sums, HEADLINE, pair.0).is_none() && find(sums, HEADLINE, pair.1).is_none() {
            continue;
        }
        md += &format!("\n## Headline: {headline}, both sidecars, mTLS {tls}\n\n");
        md += &table(
            &headline_rows(sums, pair),
            ["direct", "Envoy 1.40", "mesh-proxy"],
        );
    }
    let ran: Vec<String> = ingress_ratios(sums)
        .into_iter()
        .map(|r| r.scenario)
        .collect();
    for (sc, what) in INGRESS.iter().filter(|(sc, _)| ran.iter().any(|r| r == sc)) {
        md += &format!("\n## Ingress: {what} ({sc}), client → gateway → sidecar → app\n\n");
        md += &table(
            &ingress_rows(sums, sc),
            ["direct", "Envoy 1.40 gateway", "mesh-proxy router"],
        );
    }
    md += &crate::tracing_report::section(sums);
    md += "\n## Every scenario (medians)\n\n";
    md += "| scenario | variant | runs | req/s | p50 | p90 | p99 | p99.9 | added p50 | added p99 | sidecar CPU s/1k req | RSS under load | errors |\n";
    md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for s in sums {
        let added = |i: usize| s.added_us.map(|a| ms(a[i])).unwrap_or_else(|| "–".into());
        md += &format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.scenario,
            s.variant.map(|v| v.name()).unwrap_or("?"),
            s.runs,
            s.rps,
            ms(s.latency_us[0]),
            ms(s.latency_us[1]),
            ms(s.latency_us[2]),
            ms(s.latency_us[3]),
            added(0),
            added(2),
            s.cpu_s_per_1000
                .map(|c| format!("{c:.4}"))
                .unwrap_or_else(|| "–".into()),
            s.rss_load.map(mib).unwrap_or_else(|| "–".into()),
            s.errors
        );
    }
    md
}

#[cfg(test)]
mod tests;
