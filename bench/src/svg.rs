//! The chart, as hand-written SVG: headline latency percentiles per variant,
//! sidecar CPU per 1000 requests, and sidecar RSS idle / under load / after.

use crate::report::{find, Summary};
use crate::run::HEADLINE;
use crate::topology::Variant;

const COLORS: [(Variant, &str); 5] = [
    (Variant::Direct, "#9e9e9e"),
    (Variant::Envoy, "#d9534f"),
    (Variant::MeshProxy, "#2b7bb9"),
    (Variant::EnvoyMtls, "#8b1e1b"),
    (Variant::MeshProxyMtls, "#174a70"),
];

struct Panel<'a> {
    x: f64,
    w: f64,
    title: &'a str,
    groups: &'a [&'a str],
    /// One series per variant: (variant, value per group).
    series: Vec<(Variant, Vec<Option<f64>>)>,
    fmt: fn(f64) -> String,
}

const TOP: f64 = 72.0;
const H: f64 = 240.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn color(v: Variant) -> &'static str {
    COLORS
        .iter()
        .find(|(c, _)| *c == v)
        .map(|(_, c)| *c)
        .unwrap_or("#000")
}

fn panel(p: &Panel) -> String {
    let max = p
        .series
        .iter()
        .flat_map(|(_, vs)| vs.iter().flatten().copied())
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let mut s = format!(
        r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
        p.x,
        TOP - 12.0,
        esc(p.title)
    );
    let base = TOP + H;
    s += &format!(
        r##"<line x1="{:.1}" y1="{base:.1}" x2="{:.1}" y2="{base:.1}" stroke="#333"/>"##,
        p.x,
        p.x + p.w
    );
    let gw = p.w / p.groups.len() as f64;
    let bw = (gw - 12.0) / p.series.len().max(1) as f64;
    for (gi, g) in p.groups.iter().enumerate() {
        let gx = p.x + gi as f64 * gw + 6.0;
        s += &format!(
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            gx + (gw - 12.0) / 2.0,
            base + 15.0,
            esc(g)
        );
        for (si, (v, vals)) in p.series.iter().enumerate() {
            let Some(val) = vals.get(gi).copied().flatten() else {
                continue;
            };
            let h = (val.max(0.0) / max) * (H - 20.0);
            let x = gx + si as f64 * bw;
            s += &format!(
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                base - h,
                (bw - 2.0).max(1.0),
                color(*v),
                v.name(),
                (p.fmt)(val)
            );
            s += &format!(
                r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                x + bw / 2.0 - 1.0,
                base - h - 3.0,
                (p.fmt)(val)
            );
        }
    }
    s
}

/// The whole picture for the headline scenario.
pub fn chart(sums: &[Summary], subtitle: &str) -> String {
    let h = |v| find(sums, HEADLINE, v);
    // Only the variants that ran, so a run without the mTLS ones draws as before.
    let all: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| h(*v).is_some())
        .collect();
    let proxies: Vec<Variant> = all
        .iter()
        .copied()
        .filter(|v| *v != Variant::Direct)
        .collect();
    let lat = Panel {
        x: 20.0,
        w: 440.0,
        title: "Latency (ms), open loop 1000 req/s",
        groups: &["p50", "p90", "p99", "p99.9"],
        series: all
            .iter()
            .map(|v| {
                (
                    *v,
                    (0..4)
                        .map(|i| h(*v).map(|s| s.latency_us[i] / 1000.0))
                        .collect(),
                )
            })
            .collect(),
        fmt: |x| format!("{x:.2}"),
    };
    let cpu = Panel {
        x: 500.0,
        w: 150.0,
        title: "Sidecar CPU s / 1000 req",
        groups: &["both sidecars"],
        series: proxies
            .iter()
            .map(|v| (*v, vec![h(*v).and_then(|s| s.cpu_s_per_1000)]))
            .collect(),
        fmt: |x| format!("{x:.3}"),
    };
    let mib = |b: Option<u64>| b.map(|b| b as f64 / 1048576.0);
    let rss = Panel {
        x: 690.0,
        w: 290.0,
        title: "RSS per sidecar (MiB)",
        groups: &["idle", "under load", "after load"],
        series: proxies
            .iter()
            .map(|v| {
                let s = h(*v);
                (
                    *v,
                    vec![
                        mib(s.and_then(|s| s.rss_idle)),
                        mib(s.and_then(|s| s.rss_load)),
                        mib(s.and_then(|s| s.rss_after)),
                    ],
                )
            })
            .collect(),
        fmt: |x| format!("{x:.1}"),
    };
    let mut svg = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="380" viewBox="0 0 1000 380" font-family="sans-serif">"#,
    );
    svg += r#"<rect width="1000" height="380" fill="white"/>"#;
    svg += &format!(
        r##"<text x="20" y="22" font-size="15" font-weight="bold">mesh-bench: HTTP/1.1 1 KB, 16 connections, both sidecars, mTLS off</text><text x="20" y="38" font-size="11" fill="#555">{}</text>"##,
        esc(subtitle)
    );
    for p in [&lat, &cpu, &rss] {
        svg += &panel(p);
    }
    let mut lx = 20.0;
    for (v, c) in COLORS {
        svg += &format!(
            r#"<rect x="{lx}" y="350" width="12" height="12" fill="{c}"/><text x="{:.0}" y="360" font-size="12">{}</text>"#,
            lx + 16.0,
            v.name()
        );
        lx += 120.0;
    }
    svg += "</svg>\n";
    svg
}
