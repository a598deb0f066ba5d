//! The report: phases 1 to 4's rows (3b's when it ran) of the final table and their JSON
//! sections (built after phase 4, since rows mix figures of several phases),
//! and the end of the run: the table printed, the goals, and `--out`.

use crate::changes::Changes;
use crate::ctx::Ctx;
use crate::mesh::ENDPOINTS_PER_SERVICE;
use crate::procs::{rss_mib, Sample};
use crate::restart::Restart;
use crate::rollout::Rollout;
use crate::startup::Startup;
use crate::stats::{ms, pct, Row};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// What phases 1 to 4 measured.
pub struct Phases<'a> {
    pub st: &'a Startup,
    pub ch: &'a Changes,
    pub ro: Option<&'a Rollout>,
    pub re: &'a Restart,
}

/// Adds phases 1 to 4's rows and their `startup`, `agent`, `changes`,
/// `restart` and `benchmark_process_rss_mib` entries to the report (and
/// samples this process's RSS, all clients still connected, first).
pub fn in_process(
    rows: &mut Vec<Row>,
    report: &mut serde_json::Value,
    cx: &Ctx,
    agent_listen_first: Duration,
    phases: Phases,
) {
    let Phases { st, ch, ro, re } = phases;
    let own_rss = rss_mib(std::process::id());
    let vs = cx.vs;
    let (lat, all) = (&st.lat, &ch.all);
    let (full_m, delta_m, unch_m) = (ch.full_m, ch.delta_m, ch.unch_m);
    let (full_b, delta_b, unch_b) = (ch.full_b, ch.delta_b, ch.unch_b);
    let goal_p99 = "<= 1000 ms (issue 19)";
    rows.push((
        "proxies connected (in-process clients)".into(),
        cx.args.proxies.to_string(),
        String::new(),
    ));
    rows.push((
        "services / endpoints / VS / DR".into(),
        format!(
            "{} / {} / {vs} / {vs}",
            cx.args.services,
            cx.args.services * ENDPOINTS_PER_SERVICE
        ),
        String::new(),
    ));
    rows.push((
        "agent spawn -> listening".into(),
        format!("{:.2} s", agent_listen_first.as_secs_f64()),
        String::new(),
    ));
    rows.push((
        "all proxies' first view".into(),
        format!("{:.2} s", st.first_all.as_secs_f64()),
        String::new(),
    ));
    rows.push((
        "handshakes dropped (full accept queue): connect / restart".into(),
        format!("{} / {}", st.connect_overflows, re.overflows),
        String::new(),
    ));
    rows.push((
        format!("{} lookups answered", st.total),
        format!("{:.2} s ({} found)", st.lookups_all.as_secs_f64(), st.found),
        String::new(),
    ));
    rows.push((
        "lookup latency p50 / p99".into(),
        format!("{:.1} / {:.1} ms", ms(pct(lat, 50.0)), ms(pct(lat, 99.0))),
        String::new(),
    ));
    for (name, s) in [
        ("at rest after connect", st.idle),
        ("after lookups", st.after_lookups),
        ("after changes", ch.after_changes),
    ] {
        rows.push((
            format!("agent CPU total / RSS, {name}"),
            format!("{:.2} s / {:.1} MiB", s.cpu_s, s.rss_mib),
            "RSS <= 1024 MiB (issue 19)".into(),
        ));
    }
    rows.push((
        "change -> applied p50".into(),
        format!("{:.1} ms", ms(pct(all, 50.0))),
        String::new(),
    ));
    rows.push((
        "change -> applied p99".into(),
        format!("{:.1} ms", ms(pct(all, 99.0))),
        goal_p99.into(),
    ));
    rows.push((
        "change -> applied max".into(),
        format!("{:.1} ms", ms(pct(all, 100.0))),
        String::new(),
    ));
    rows.push((
        "affected proxies per change (mean)".into(),
        format!("{:.1}", ch.affected_mean),
        String::new(),
    ));
    rows.push((
        "agent CPU per 1,000 changes".into(),
        format!("{:.2} vCPU-s", ch.cpu_per_change * 1000.0),
        "<= 1 vCPU-s (issue 19)".into(),
    ));
    rows.push((
        "of which user space / kernel; context switches per change".into(),
        format!(
            "{:.2} / {:.2} vCPU-s; {:.1}",
            ch.user_per_change * 1000.0,
            ch.kernel_per_change * 1000.0,
            ch.switches_per_change
        ),
        String::new(),
    ));
    rows.push((
        "agent CPU at rest, all proxies connected".into(),
        format!("{:.1} ms per second", ch.rest_per_s * 1e3),
        String::new(),
    ));
    rows.push((
        "agent CPU per 1,000 changes, net of rest".into(),
        format!("{:.2} vCPU-s", ch.net_per_change * 1000.0),
        String::new(),
    ));
    rows.push((
        "view messages per change full / delta / unchanged".into(),
        format!("{full_m:.1} / {delta_m:.1} / {unch_m:.1}"),
        String::new(),
    ));
    rows.push((
        "view bytes per change full / delta / unchanged".into(),
        format!("{full_b:.0} / {delta_b:.0} / {unch_b:.0}"),
        String::new(),
    ));
    if let Some(ro) = ro {
        rollout_rows(rows, report, ro);
    }
    rows.push((
        "restart: all proxies newer view".into(),
        format!("{:.2} s after SIGKILL", re.resync.as_secs_f64()),
        String::new(),
    ));
    rows.push((
        "restart: looked-up hosts back".into(),
        format!("{:.2} s after SIGKILL", re.back.as_secs_f64()),
        String::new(),
    ));
    rows.push((
        "restarted agent CPU / RSS".into(),
        format!("{:.2} s / {:.1} MiB", re.after.cpu_s, re.after.rss_mib),
        String::new(),
    ));
    rows.push((
        "benchmark process RSS (all clients)".into(),
        format!("{own_rss:.1} MiB"),
        String::new(),
    ));

    let r = report.as_object_mut().unwrap();
    r.insert("startup".into(), json!({
        "first_views_s": st.first_all.as_secs_f64(), "connect_listen_overflows": st.connect_overflows,
        "restart_listen_overflows": re.overflows,
        "lookups": st.total, "lookups_s": st.lookups_all.as_secs_f64(),
        "found": st.found, "not_in_mesh": st.not_found, "unavailable": st.unavailable,
        "lookup_p50_ms": ms(pct(lat, 50.0)), "lookup_p99_ms": ms(pct(lat, 99.0)),
        "lookup_max_ms": ms(pct(lat, 100.0)), "views_missing_found_hosts": st.missing,
    }));
    let s = |x: Sample| json!({"cpu_s": x.cpu_s, "rss_mib": x.rss_mib});
    r.insert(
        "agent".into(),
        json!({
            "at_rest_after_connect": s(st.idle), "after_lookups": s(st.after_lookups),
            "after_changes": s(ch.after_changes), "restarted_after_resync": s(re.after),
        }),
    );
    r.insert("changes".into(), json!({
        "count": ch.count, "pairs": all.len(),
        "affected_mean": ch.affected_mean,
        "p50_ms": ms(pct(all, 50.0)), "p99_ms": ms(pct(all, 99.0)), "max_ms": ms(pct(all, 100.0)),
        "agent_cpu_s_per_change": ch.cpu_per_change,
        "agent_cpu_s_per_1000_changes": ch.cpu_per_change * 1000.0,
        "series_s": ch.series_s, "agent_rest_cpu_s_per_s": ch.rest_per_s,
        "agent_cpu_s_per_1000_changes_net_of_rest": ch.net_per_change * 1000.0,
        "benchmark_cpu_s_per_change": ch.own_per_change,
        "agent_user_s_per_1000_changes": ch.user_per_change * 1000.0,
        "agent_kernel_s_per_1000_changes": ch.kernel_per_change * 1000.0,
        "agent_context_switches_per_change": ch.switches_per_change,
        "full_messages_per_change": full_m, "delta_messages_per_change": delta_m,
        "full_bytes_per_change": full_b, "delta_bytes_per_change": delta_b,
        "unchanged_messages_per_change": unch_m, "unchanged_bytes_per_change": unch_b,
        "metrics_before": format!("{:?}", ch.m0), "metrics_after": format!("{:?}", ch.m1),
        "each": ch.per_change,
    }));
    r.insert(
        "restart".into(),
        json!({
            "newer_view_all_s": re.resync.as_secs_f64(),
            "looked_up_hosts_back_all_s": re.back.as_secs_f64(),
            "agent_listening_s": re.listening.as_secs_f64(),
        }),
    );
    r.insert("benchmark_process_rss_mib".into(), json!(own_rss));
}

/// Phase 3b's rows and its `rollout` entry.
fn rollout_rows(rows: &mut Vec<Row>, report: &mut serde_json::Value, ro: &Rollout) {
    let st = &ro.settled;
    rows.push((
        "rollout: EndpointSlice changes (services x pods)".into(),
        format!(
            "{} ({} x {ENDPOINTS_PER_SERVICE}) over {:.2} s",
            ro.changes, ro.services, ro.span_s
        ),
        String::new(),
    ));
    rows.push((
        "rollout: affected proxies; views each applied".into(),
        format!("{}; {:.1}", ro.affected, ro.views_per_proxy),
        String::new(),
    ));
    rows.push((
        "rollout: last change -> final endpoints p50 / p99 / max".into(),
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            ms(pct(st, 50.0)),
            ms(pct(st, 99.0)),
            ms(pct(st, 100.0))
        ),
        String::new(),
    ));
    rows.push((
        "rollout: agent CPU per 1,000 changes".into(),
        format!("{:.2} vCPU-s", ro.cpu_per_change * 1000.0),
        String::new(),
    ));
    rows.push((
        "rollout: deltas / bytes per change".into(),
        format!("{:.1} / {:.0}", ro.delta_m, ro.delta_b),
        String::new(),
    ));
    report.as_object_mut().unwrap().insert(
        "rollout".into(),
        json!({
            "services": ro.services, "changes": ro.changes, "span_s": ro.span_s,
            "affected_proxies": ro.affected, "pairs": ro.pairs,
            "views_per_affected_proxy": ro.views_per_proxy,
            "settled_p50_ms": ms(pct(st, 50.0)), "settled_p99_ms": ms(pct(st, 99.0)),
            "settled_max_ms": ms(pct(st, 100.0)),
            "agent_cpu_s_per_1000_changes": ro.cpu_per_change * 1000.0,
            "delta_messages_per_change": ro.delta_m, "delta_bytes_per_change": ro.delta_b,
        }),
    );
}

/// Ends the run: the reference row, the table printed, the total run time,
/// the goals and the table added to the report, written to `out` if given.
pub fn finish(
    mut rows: Vec<Row>,
    report: &mut serde_json::Value,
    started: Instant,
    out: Option<&Path>,
) {
    rows.push((
        "reference: istiod (Istio docs)".into(),
        "1 vCPU / 1.5 GB for 1,000 services, 2,000 sidecars".into(),
        String::new(),
    ));
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    println!();
    println!("{:w0$}  {:w1$}  goal", "metric", "value");
    println!("{}", "-".repeat(w0 + w1 + 40));
    for (a, b, c) in &rows {
        println!("{a:w0$}  {b:w1$}  {c}");
    }
    println!("total run time {:.0}s", started.elapsed().as_secs_f64());
    report.as_object_mut().unwrap().insert(
        "goals".into(),
        json!({
            "p99_change_to_applied_ms": 1000, "sidecar_rss_growth_mib": 1,
            "agent_vcpu_s_per_1000_changes": 1, "agent_rss_gib": 1,
            "istiod_reference": "1 vCPU / 1.5 GB for 1,000 services and 2,000 sidecars",
        }),
    );
    report.as_object_mut().unwrap().insert(
        "table".into(),
        json!(rows
            .iter()
            .map(|r| json!({"metric": r.0, "value": r.1, "goal": r.2}))
            .collect::<Vec<_>>()),
    );
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_string_pretty(&*report).unwrap()).unwrap();
        println!("wrote {}", out.display());
    }
}
