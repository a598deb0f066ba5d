//! The tracing cost table: mesh-proxy with tracing off (`mesh-proxy`), at
//! Istio's default 1 % sampling and at 100 %, side by side per scenario (the
//! three variants run interleaved, so their differences are tracing's cost).

use crate::summary::{find, ms, Summary};
use crate::topology::Variant;

const ROWS: [(Variant, &str); 3] = [
    (Variant::MeshProxy, "off"),
    (Variant::MeshProxyTracing1, "1 %"),
    (Variant::MeshProxyTracing100, "100 %"),
];

/// One Markdown section per scenario a tracing variant ran in (empty when none did).
pub fn section(sums: &[Summary]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for s in sums {
        let traced = s.variant.and_then(|v| v.tracing_percent()).is_some();
        if traced && !scenarios.contains(&s.scenario.as_str()) {
            scenarios.push(&s.scenario);
        }
    }
    let mut md = String::new();
    for sc in scenarios {
        md += &format!("\n## Tracing cost: {sc}, mesh-proxy sidecars (spans to a Zipkin sink)\n\n");
        md += "| tracing | p50 | p99 | added p99 | sidecar CPU s / 1000 req (both) | CPU ÷ off | spans / 1000 req | spans dropped |\n";
        md += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
        let off = find(sums, sc, Variant::MeshProxy).and_then(|s| s.cpu_s_per_1000);
        for (v, label) in ROWS {
            let Some(s) = find(sums, sc, v) else { continue };
            let dash = || "–".to_string();
            let cpu = s.cpu_s_per_1000;
            md += &format!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} |\n",
                ms(s.latency_us[0]),
                ms(s.latency_us[2]),
                s.added_us.map(|a| ms(a[2])).unwrap_or_else(dash),
                cpu.map(|c| format!("{c:.4}")).unwrap_or_else(dash),
                match (cpu, off) {
                    (Some(c), Some(o)) if o > 0.0 => format!("{:.2}", c / o),
                    _ => dash(),
                },
                s.spans_per_1000
                    .map(|n| format!("{n:.0}"))
                    .unwrap_or_else(dash),
                s.spans_dropped.map(|n| n.to_string()).unwrap_or_else(dash),
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::HEADLINE;

    fn sum(v: Variant, p99: f64, cpu: f64, spans: Option<f64>) -> Summary {
        Summary {
            scenario: HEADLINE.into(),
            variant: Some(v),
            latency_us: [500.0, 700.0, p99, 2.0 * p99],
            added_us: Some([100.0, 100.0, p99 - 1000.0, 0.0]),
            cpu_s_per_1000: Some(cpu),
            spans_per_1000: spans,
            spans_dropped: spans.map(|_| 0),
            ..Default::default()
        }
    }

    #[test]
    fn off_one_and_hundred_percent_side_by_side() {
        let sums = vec![
            sum(Variant::Direct, 1000.0, 0.0, None),
            sum(Variant::MeshProxy, 1500.0, 0.2, None),
            sum(Variant::MeshProxyTracing1, 1520.0, 0.21, Some(19.6)),
            sum(Variant::MeshProxyTracing100, 1800.0, 0.3, Some(2000.0)),
        ];
        let md = section(&sums);
        assert!(md.contains("## Tracing cost: http1-1kb-1000rps"), "{md}");
        assert!(
            md.contains("| off | 0.500 ms | 1.500 ms | 0.500 ms | 0.2000 | 1.00 | – | – |"),
            "{md}"
        );
        assert!(
            md.contains("| 1 % | 0.500 ms | 1.520 ms | 0.520 ms | 0.2100 | 1.05 | 20 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| 100 % | 0.500 ms | 1.800 ms | 0.800 ms | 0.3000 | 1.50 | 2000 | 0 |"),
            "{md}"
        );
        assert!(section(&sums[..2]).is_empty(), "no tracing variant ran");
    }
}
