//! istiod's metrics that Istio's control-plane dashboard reads, under
//! istiod's names: `pilot_xds` (connected proxies), `pilot_xds_pushes`,
//! `pilot_total_xds_rejects` and the `pilot_xds_push_time` histogram, plus
//! `istio_build{component="pilot"}`. istiod labels them by xDS type (`cds`,
//! `lds`, ...); a proxy of ours gets its whole view in one message, so the
//! type here is `view`: the dashboards group by `type`, whatever its values.
//! Ours beside them: view messages and bytes by kind (whole view or delta),
//! what incremental pushes save.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The `type` label of every push.
pub const TYPE: &str = "view";

/// istiod's `pilot_xds_push_time` buckets, in seconds.
const PUSH_TIME_BUCKETS: [f64; 8] = [0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative), then above the last one.
    counts: [u64; PUSH_TIME_BUCKETS.len() + 1],
    sum: f64,
}

/// Pushes and rejects since the agent started.
#[derive(Debug, Default)]
pub struct XdsMetrics {
    pushes: AtomicU64,
    rejects: AtomicU64,
    lookups_refused: AtomicU64,
    push_time: Mutex<Histogram>,
    /// Messages and bytes written per [`PushKind`] (index).
    sent: [(AtomicU64, AtomicU64); 3],
}

/// How a view went to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// The whole view.
    Full = 0,
    /// Only the services that changed ([`mesh_api::syncdelta`]).
    Delta = 1,
    /// The new version alone: nothing in the view changed, known without
    /// building it.
    Unchanged = 2,
}

impl PushKind {
    fn label(i: usize) -> &'static str {
        ["full", "delta", "unchanged"][i]
    }
}

impl XdsMetrics {
    /// One view sent to one proxy, `took` from picking up the snapshot to
    /// the message flushed.
    pub fn pushed(&self, took: Duration) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        let s = took.as_secs_f64();
        let i = PUSH_TIME_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(PUSH_TIME_BUCKETS.len());
        let mut h = self.push_time.lock().unwrap_or_else(|e| e.into_inner());
        h.counts[i] += 1;
        h.sum += s;
    }

    /// A view message of `bytes` written to one proxy.
    pub fn sent(&self, kind: PushKind, bytes: usize) {
        let (n, b) = &self.sent[kind as usize];
        n.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A proxy refused (NACKed) a view.
    pub fn rejected(&self) {
        self.rejects.fetch_add(1, Ordering::Relaxed);
    }

    /// A lookup refused because its stream spent its budget.
    pub fn lookup_refused(&self) {
        self.lookups_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text, with `connected` proxies right now.
    pub fn render(&self, connected: usize) -> String {
        let tag = env!("CARGO_PKG_VERSION");
        let mut out = String::with_capacity(1024);
        let _ = writeln!(
            out,
            "# HELP istio_build Version of this component.\n# TYPE istio_build gauge\n\
             istio_build{{component=\"pilot\",tag=\"{tag}\"}} 1"
        );
        let _ = writeln!(
            out,
            "# HELP pilot_xds Proxies subscribed to this agent now.\n\
             # TYPE pilot_xds gauge\npilot_xds{{version=\"{tag}\"}} {connected}"
        );
        let _ = writeln!(
            out,
            "# HELP pilot_xds_pushes Views sent to proxies.\n\
             # TYPE pilot_xds_pushes counter\npilot_xds_pushes{{type=\"{TYPE}\"}} {}",
            self.pushes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP pilot_total_xds_rejects Views proxies refused (NACKed).\n\
             # TYPE pilot_total_xds_rejects counter\npilot_total_xds_rejects{{type=\"{TYPE}\"}} {}",
            self.rejects.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP mesh_agent_lookups_refused_total On-demand lookups refused: the stream spent its budget.\n\
             # TYPE mesh_agent_lookups_refused_total counter\nmesh_agent_lookups_refused_total {}",
            self.lookups_refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP mesh_agent_view_messages_total View messages written to proxies: whole views, deltas, version-only deltas for unchanged views.\n\
             # TYPE mesh_agent_view_messages_total counter"
        );
        for (i, (n, _)) in self.sent.iter().enumerate() {
            let _ = writeln!(
                out,
                "mesh_agent_view_messages_total{{kind=\"{}\"}} {}",
                PushKind::label(i),
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mesh_agent_view_bytes_total Bytes of view messages written to proxies.\n\
             # TYPE mesh_agent_view_bytes_total counter"
        );
        for (i, (_, b)) in self.sent.iter().enumerate() {
            let _ = writeln!(
                out,
                "mesh_agent_view_bytes_total{{kind=\"{}\"}} {}",
                PushKind::label(i),
                b.load(Ordering::Relaxed)
            );
        }
        let h = self.push_time.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP pilot_xds_push_time Seconds from a new snapshot to its view sent to one proxy.\n\
             # TYPE pilot_xds_push_time histogram"
        );
        let mut cum = 0;
        for (b, n) in PUSH_TIME_BUCKETS.iter().zip(h.counts) {
            cum += n;
            let _ = writeln!(
                out,
                "pilot_xds_push_time_bucket{{type=\"{TYPE}\",le=\"{b}\"}} {cum}"
            );
        }
        let count: u64 = h.counts.iter().sum();
        let _ = writeln!(
            out,
            "pilot_xds_push_time_bucket{{type=\"{TYPE}\",le=\"+Inf\"}} {count}\n\
             pilot_xds_push_time_sum{{type=\"{TYPE}\"}} {}\n\
             pilot_xds_push_time_count{{type=\"{TYPE}\"}} {count}",
            h.sum
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .to_string()
    }

    #[test]
    fn renders_istiods_names_with_counts_and_cumulative_buckets() {
        let m = XdsMetrics::default();
        m.pushed(Duration::from_millis(5));
        m.pushed(Duration::from_millis(50));
        m.pushed(Duration::from_secs(40));
        m.rejected();
        m.sent(PushKind::Full, 1000);
        m.sent(PushKind::Delta, 40);
        m.sent(PushKind::Delta, 60);
        let t = m.render(3);
        assert_eq!(
            value(&t, "mesh_agent_view_messages_total{kind=\"full\"}"),
            "1"
        );
        assert_eq!(
            value(&t, "mesh_agent_view_messages_total{kind=\"delta\"}"),
            "2"
        );
        assert_eq!(
            value(&t, "mesh_agent_view_bytes_total{kind=\"full\"}"),
            "1000"
        );
        assert_eq!(
            value(&t, "mesh_agent_view_bytes_total{kind=\"delta\"}"),
            "100"
        );
        let tag = env!("CARGO_PKG_VERSION");
        assert_eq!(
            value(
                &t,
                &format!("istio_build{{component=\"pilot\",tag=\"{tag}\"}}")
            ),
            "1"
        );
        assert_eq!(value(&t, &format!("pilot_xds{{version=\"{tag}\"}}")), "3");
        assert_eq!(value(&t, "pilot_xds_pushes{type=\"view\"}"), "3");
        assert_eq!(value(&t, "pilot_total_xds_rejects{type=\"view\"}"), "1");
        let bucket = |le: &str| {
            value(
                &t,
                &format!("pilot_xds_push_time_bucket{{type=\"view\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.01"), "1");
        assert_eq!(bucket("0.1"), "2");
        assert_eq!(bucket("30"), "2");
        assert_eq!(bucket("+Inf"), "3");
        assert_eq!(value(&t, "pilot_xds_push_time_count{type=\"view\"}"), "3");
        let sum: f64 = value(&t, "pilot_xds_push_time_sum{type=\"view\"}")
            .parse()
            .unwrap();
        assert!((sum - 40.055).abs() < 1e-9, "{sum}");
        for name in ["pilot_xds", "pilot_xds_pushes", "pilot_total_xds_rejects"] {
            assert!(t.contains(&format!("# TYPE {name} ")), "{t}");
        }
        assert!(t.contains("# TYPE pilot_xds_push_time histogram"), "{t}");
    }
}
