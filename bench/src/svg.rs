//! The chart, as hand-written SVG: headline latency percentiles per variant,
//! sidecar CPU per 1000 requests, and sidecar RSS idle / under load / after;
//! below them, when the gateway variants ran, the ingress scenarios' added p99
//! and CPU per 1000 requests with the mesh-proxy ÷ Envoy ratios.

use crate::report::{find, ingress_ratios, Summary, INGRESS};
use crate::run::HEADLINE;
use crate::topology::Variant;

const COLORS: [(Variant, &str); 9] = [
    (Variant::Direct, "#9e9e9e"),
    (Variant::Envoy, "#d9534f"),
    (Variant::MeshProxy, "#2b7bb9"),
    (Variant::EnvoyMtls, "#8b1e1b"),
    (Variant::MeshProxyMtls, "#174a70"),
    (Variant::EnvoyGateway, "#f0ad4e"),
    (Variant::MeshProxyGateway, "#5cb85c"),
    (Variant::MeshProxyTracing1, "#7fb3d5"),
    (Variant::MeshProxyTracing100, "#9b59b6"),
];

struct Panel<'a> {
    x: f64,
    /// Top of the panel's plot area.
    top: f64,
    w: f64,
    title: &'a str,
    groups: &'a [&'a str],
    /// One series per variant: (variant, value per group).
    series: Vec<(Variant, Vec<Option<f64>>)>,
    fmt: fn(f64) -> String,
}

const TOP: f64 = 72.0;
const H: f64 = 240.0;
/// Height of one row of panels (plot, labels, gap).
const ROW: f64 = 330.0;

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
        p.top - 12.0,
        esc(p.title)
    );
    let base = p.top + H;
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
        top: TOP,
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
        top: TOP,
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
        top: TOP,
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
    let ingress = ingress_panels(sums);
    let height = if ingress.is_empty() {
        380.0
    } else {
        380.0 + ROW
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="{height}" viewBox="0 0 1000 {height}" font-family="sans-serif">"#,
    );
    svg += &format!(r#"<rect width="1000" height="{height}" fill="white"/>"#);
    svg += &format!(
        r##"<text x="20" y="22" font-size="15" font-weight="bold">mesh-bench: HTTP/1.1 1 KB, 16 connections, both sidecars, mTLS off</text><text x="20" y="38" font-size="11" fill="#555">{}</text>"##,
        esc(subtitle)
    );
    for p in [&lat, &cpu, &rss] {
        svg += &panel(p);
    }
    svg += &ingress;
    let ly = height - 30.0;
    let mut lx = 20.0;
    for (v, c) in COLORS {
        svg += &format!(
            r#"<rect x="{lx}" y="{ly}" width="12" height="12" fill="{c}"/><text x="{:.0}" y="{:.0}" font-size="12">{}</text>"#,
            lx + 16.0,
            ly + 10.0,
            v.name()
        );
        lx += 138.0;
    }
    svg += "</svg>\n";
    svg
}

/// The ingress row: added p99 and gateway + sidecar CPU per 1000 requests of
/// both gateways, HTTP and HTTPS, and the ratios against the goal. Empty when
/// no gateway variant ran.
fn ingress_panels(sums: &[Summary]) -> String {
    let ratios = ingress_ratios(sums);
    if ratios.is_empty() {
        return String::new();
    }
    let top = TOP + ROW;
    let gateways = [Variant::EnvoyGateway, Variant::MeshProxyGateway];
    let groups: [&str; 2] = ["HTTP", "HTTPS"];
    let series = |f: &dyn Fn(&Summary) -> Option<f64>| -> Vec<(Variant, Vec<Option<f64>>)> {
        gateways
            .iter()
            .map(|v| {
                let vals = INGRESS
                    .iter()
                    .map(|(sc, _)| find(sums, sc, *v).and_then(f))
                    .collect();
                (*v, vals)
            })
            .collect()
    };
    let added = Panel {
        x: 20.0,
        top,
        w: 300.0,
        title: "Ingress: added p99 over direct (ms)",
        groups: &groups,
        series: series(&|s| s.added_us.map(|a| a[2] / 1000.0)),
        fmt: |x| format!("{x:.2}"),
    };
    let cpu = Panel {
        x: 360.0,
        top,
        w: 300.0,
        title: "Ingress: CPU s / 1000 req (gateway + sidecar)",
        groups: &groups,
        series: series(&|s| s.cpu_s_per_1000),
        fmt: |x| format!("{x:.3}"),
    };
    let mut s = panel(&added) + &panel(&cpu);
    let fmt = |r: Option<f64>| r.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "–".into());
    s += &format!(
        r#"<text x="700" y="{:.0}" font-size="13" font-weight="bold">mesh-proxy router ÷ Envoy (goal ≤ {}×)</text>"#,
        top + 20.0,
        ratios[0].goal
    );
    for (i, r) in ratios.iter().enumerate() {
        let name = if r.scenario == crate::run::INGRESS_HTTPS {
            "HTTPS"
        } else {
            "HTTP"
        };
        s += &format!(
            r#"<text x="700" y="{:.0}" font-size="12">{name}: added p99 {}, CPU/1000 req {}</text>"#,
            top + 48.0 + i as f64 * 22.0,
            fmt(r.added_p99),
            fmt(r.cpu_per_1000)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::INGRESS_HTTP;

    fn sum(scenario: &str, v: Variant, added_p99_us: f64, cpu: f64) -> Summary {
        Summary {
            scenario: scenario.into(),
            variant: Some(v),
            added_us: Some([0.0, 0.0, added_p99_us, 0.0]),
            cpu_s_per_1000: Some(cpu),
            ..Default::default()
        }
    }

    #[test]
    fn the_ingress_row_appears_only_with_gateway_runs() {
        let plain = chart(&[sum(HEADLINE, Variant::Envoy, 500.0, 0.4)], "t");
        assert!(plain.contains(r#"height="380""#), "{plain}");
        assert!(!plain.contains("Ingress"), "{plain}");
        let sums = [
            sum(INGRESS_HTTP, Variant::EnvoyGateway, 2000.0, 0.5),
            sum(INGRESS_HTTP, Variant::MeshProxyGateway, 500.0, 0.4),
        ];
        let svg = chart(&sums, "t");
        assert!(svg.contains(r#"height="710""#), "{svg}");
        assert!(svg.contains("goal ≤ 0.5×"), "{svg}");
        assert!(
            svg.contains("HTTP: added p99 0.25×, CPU/1000 req 0.80×"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>mesh-proxy-gateway: 0.50</title>"),
            "{svg}"
        );
    }
}
