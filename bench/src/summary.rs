//! One scenario's medians on one variant ([`Summary`]) and the lookups the
//! report sections share. A leaf below the main report and the tracing
//! section, which both read summaries.

use serde::{Deserialize, Serialize};

use crate::topology::Variant;

/// Medians over the repetitions of one scenario on one variant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub variant: Option<Variant>,
    pub runs: usize,
    pub rps: f64,
    pub errors: u64,
    /// p50, p90, p99, p99.9 in microseconds.
    pub latency_us: [f64; 4],
    /// Latency minus direct's, per percentile (µs).
    pub added_us: Option<[f64; 4]>,
    /// Both sidecars' CPU seconds per 1000 requests.
    pub cpu_s_per_1000: Option<f64>,
    /// Share of the sidecars' CPU spent in the kernel (0..1).
    #[serde(default)]
    pub kernel_share: Option<f64>,
    /// Read + write system calls of both sidecars per request.
    #[serde(default)]
    pub syscalls_per_req: Option<f64>,
    /// Requests per second per sidecar CPU-second (both sidecars summed).
    pub req_per_cpu_s: Option<f64>,
    /// RSS of the larger sidecar: idle, peak under load, after load (bytes).
    pub rss_idle: Option<u64>,
    pub rss_load: Option<u64>,
    pub rss_after: Option<u64>,
    /// Private memory of the larger sidecar: idle, peak under load (bytes).
    #[serde(default)]
    pub private_idle: Option<u64>,
    #[serde(default)]
    pub private_load: Option<u64>,
    /// Tracing variants: spans the sink got per 1000 requests (median), and
    /// spans the sidecars dropped in all runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans_per_1000: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans_dropped: Option<u64>,
}

pub fn find<'a>(sums: &'a [Summary], scenario: &str, v: Variant) -> Option<&'a Summary> {
    sums.iter()
        .find(|s| s.scenario == scenario && s.variant == Some(v))
}

pub(crate) fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1000.0)
}
