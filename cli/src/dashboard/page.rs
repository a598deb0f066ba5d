//! The dashboard's one page: the service graph (inline SVG), a detail row per
//! workload (inbound and outbound rate, error %, p50/p99), and recent traces as
//! waterfalls. Plain HTML and CSS, no script and nothing fetched from outside:
//! it renders offline and is checked from its DOM.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::graph::{Graph, Kind, Traffic};
use super::svg::{anchor, esc, render};
use crate::zipkin::Span;

/// What the page shows besides the data: where it came from and what failed.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub title: String,
    /// "metrics: …" line.
    pub metrics_from: String,
    /// "traces: …" line.
    pub traces_from: String,
    /// Things that could not be read (a pod's scrape, the collector).
    pub problems: Vec<String>,
    /// Seconds between automatic reloads (0: none).
    pub refresh: u32,
}

const CSS: &str = "body{font-family:sans-serif;margin:16px;color:#222;background:#fff}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.meta{color:#667;font-size:12px}.problems{color:#b22;font-size:12px}\
table{border-collapse:collapse;font-size:12px}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}\
td:first-child,th:first-child{text-align:left}tr:target{background:#fff6cc}\
.trace{margin:6px 0;border:1px solid #dde;border-radius:6px;padding:4px 8px}\
.trace summary{cursor:pointer;font-size:13px}\
.span{display:grid;grid-template-columns:170px 320px 1fr 110px;align-items:center;font-size:12px;height:20px}\
.span .svc{font-weight:bold;overflow:hidden;white-space:nowrap}.span .name{overflow:hidden;white-space:nowrap;color:#444}\
.lane{position:relative;height:12px;background:#f3f4f6}.bar{position:absolute;top:0;height:12px;border-radius:2px}\
.dur{text-align:right;color:#444}.graph-wrap{overflow-x:auto}";

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn traffic_cells(t: &Traffic) -> String {
    format!(
        "<td>{:.2}</td><td>{:.1}</td><td>{}</td><td>{}</td>",
        t.rps,
        t.error_pct(),
        ms(t.quantile(0.5)),
        ms(t.quantile(0.99))
    )
}

fn workloads(g: &Graph) -> String {
    let mut s = String::from(
        "<table class=\"workloads\"><tr><th>workload</th><th>in rps</th><th>in err %</th><th>in p50 ms</th><th>in p99 ms</th>\
<th>out rps</th><th>out err %</th><th>out p50 ms</th><th>out p99 ms</th></tr>",
    );
    for n in g
        .nodes
        .values()
        .filter(|n| matches!(n.kind, Kind::Workload | Kind::Gateway))
    {
        let (inb, out) = g.traffic_of(&n.id);
        let _ = write!(
            s,
            "<tr id=\"{a}\" class=\"workload\" data-id=\"{id}\" data-in-rps=\"{ir:.4}\" data-out-rps=\"{or:.4}\"><td>{ns}/{name}</td>{i}{o}</tr>",
            a = anchor(&n.id),
            id = esc(&n.id),
            ir = inb.rps,
            or = out.rps,
            ns = esc(&n.namespace),
            name = esc(&n.name),
            i = traffic_cells(&inb),
            o = traffic_cells(&out),
        );
    }
    s.push_str("</table>");
    s
}

/// Depth of each span under its parent (0 for roots and orphans).
fn depths(spans: &[Span]) -> Vec<usize> {
    let parent: BTreeMap<&str, &str> = spans
        .iter()
        .filter_map(|s| Some((s.id.as_str(), s.parent_id.as_deref()?)))
        .collect();
    spans
        .iter()
        .map(|s| {
            let mut d = 0;
            let mut cur = s.id.as_str();
            while let Some(p) = parent.get(cur) {
                if d >= spans.len() {
                    break;
                }
                d += 1;
                cur = p;
            }
            d
        })
        .collect()
}

fn trace(t: &[Span], open: bool) -> String {
    let start = t.iter().filter_map(|s| s.timestamp).min().unwrap_or(0);
    let end = t
        .iter()
        .filter_map(|s| Some(s.timestamp? + s.duration.unwrap_or(0)))
        .max()
        .unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let services: BTreeSet<&str> = t.iter().map(Span::service).collect();
    let root = t
        .iter()
        .find(|s| s.parent_id.is_none())
        .or(t.first())
        .and_then(|s| s.name.clone())
        .unwrap_or_default();
    let svc_list: Vec<&str> = services.iter().copied().collect();
    let mut s = format!(
        "<details class=\"trace\" data-trace-id=\"{id}\" data-services=\"{svcs}\" data-spans=\"{n}\"{open}><summary><b>{root}</b> — {n} spans, {ns} services ({svcs}), {dur:.2} ms</summary>",
        id = esc(&t[0].trace_id),
        svcs = esc(&svc_list.join(",")),
        n = t.len(),
        open = if open { " open" } else { "" },
        root = esc(&root),
        ns = services.len(),
        dur = total / 1000.0,
    );
    let palette = [
        "#4a78c2", "#3a9a5b", "#c77d00", "#7a5ab5", "#d33b3b", "#2a9d9d",
    ];
    for (span, d) in t.iter().zip(depths(t)) {
        let svc = span.service();
        // A failed span (the proxy's `error` tag) is red, whatever its service.
        let failed = span.tags.get("error").is_some_and(|v| v == "true");
        let color = if failed {
            "#d33b3b"
        } else {
            palette[svc_list.iter().position(|x| *x == svc).unwrap_or(0) % palette.len()]
        };
        let status = span
            .tags
            .get("http.status_code")
            .map(String::as_str)
            .unwrap_or("");
        let off = span.timestamp.unwrap_or(start).saturating_sub(start) as f64 / total * 100.0;
        let dur = span.duration.unwrap_or(0) as f64;
        let width = (dur / total * 100.0).clamp(0.5, 100.0 - off.min(99.5));
        let _ = write!(
            s,
            "<div class=\"span\" data-service=\"{svc}\" data-name=\"{name}\" data-kind=\"{kind}\" data-duration-us=\"{dur}\" data-status=\"{status}\" data-error=\"{failed}\">\
<span class=\"svc\" style=\"padding-left:{pad}px\">{svc}</span><span class=\"name\">{kindl} {name}</span>\
<div class=\"lane\"><div class=\"bar\" style=\"left:{off:.2}%;width:{width:.2}%;background:{color}\"></div></div><span class=\"dur\">{status} {ms:.2} ms</span></div>",
            svc = esc(svc),
            name = esc(span.name.as_deref().unwrap_or("-")),
            kind = esc(span.kind.as_deref().unwrap_or("")),
            kindl = esc(&span.kind.as_deref().unwrap_or("").to_ascii_lowercase()),
            status = esc(status),
            pad = d * 12,
            ms = dur / 1000.0,
        );
    }
    s.push_str("</details>");
    s
}

/// The whole page.
pub fn page(meta: &Meta, g: &Graph, traces: &[Vec<Span>]) -> String {
    let mut s = String::from("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    if meta.refresh > 0 {
        let _ = write!(
            s,
            "<meta http-equiv=\"refresh\" content=\"{}\">",
            meta.refresh
        );
    }
    let _ = write!(
        s,
        "<title>{t}</title><style>{CSS}</style></head><body><h1>{t}</h1><div class=\"meta\">{m}<br>{tr}</div>",
        t = esc(&meta.title),
        m = esc(&meta.metrics_from),
        tr = esc(&meta.traces_from)
    );
    if !meta.problems.is_empty() {
        s.push_str("<ul class=\"problems\">");
        for p in &meta.problems {
            let _ = write!(s, "<li>{}</li>", esc(p));
        }
        s.push_str("</ul>");
    }
    s.push_str("<h2>Service graph</h2>");
    if g.nodes.is_empty() {
        s.push_str(
            "<p class=\"empty\">No traffic seen yet: send some requests through the mesh.</p>",
        );
    } else {
        let _ = write!(s, "<div class=\"graph-wrap\">{}</div>", render(g));
    }
    s.push_str("<h2>Workloads</h2>");
    s.push_str(&workloads(g));
    let _ = write!(
        s,
        "<h2>Traces</h2><div class=\"traces\" data-count=\"{}\">",
        traces.len()
    );
    if traces.is_empty() {
        s.push_str("<p class=\"empty\">No traces yet (the mesh samples 1 % of requests unless defaultConfig.tracing.sampling says otherwise).</p>");
    }
    for (i, t) in traces.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
        s.push_str(&trace(t, i < 3));
    }
    s.push_str("</div></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zipkin::Endpoint;

    fn span(id: &str, parent: Option<&str>, svc: &str, ts: u64, dur: u64) -> Span {
        Span {
            trace_id: "00000000000000010000000000000002".into(),
            id: id.into(),
            parent_id: parent.map(str::to_string),
            kind: Some(if parent.is_some() { "SERVER" } else { "CLIENT" }.into()),
            name: Some(format!("{svc} call")),
            timestamp: Some(ts),
            duration: Some(dur),
            local_endpoint: Some(Endpoint {
                service_name: Some(svc.into()),
                ..Endpoint::default()
            }),
            remote_endpoint: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn a_trace_is_a_waterfall_of_its_spans_by_service() {
        let t = vec![
            span("a", None, "productpage.default", 1_000, 4_000),
            span("b", Some("a"), "reviews.default", 2_000, 2_000),
            Span {
                tags: [("error", "true"), ("http.status_code", "503")]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
                ..span("c", Some("b"), "ratings.default", 2_500, 1_000)
            },
        ];
        let html = page(&Meta::default(), &Graph::default(), &[t]);
        assert!(
            html.contains("data-services=\"productpage.default,ratings.default,reviews.default\""),
            "{html}"
        );
        assert!(html.contains("3 spans, 3 services"), "{html}");
        // reviews starts 1 ms into a 4 ms trace and lasts half of it, one level in.
        let r = &html[html.find("data-service=\"reviews.default\"").unwrap()..];
        assert!(r.contains("padding-left:12px"), "{r}");
        assert!(r.contains("left:25.00%;width:50.00%"), "{r}");
        assert!(r.contains("2.00 ms"), "{r}");
        assert!(r.contains("data-error=\"false\""), "{r}");
        let c = &html[html.find("data-service=\"ratings.default\"").unwrap()..];
        assert!(c.contains("data-status=\"503\" data-error=\"true\""), "{c}");
        assert!(
            c.contains("background:#d33b3b"),
            "a failed span is red: {c}"
        );
        assert!(c.contains("padding-left:24px"), "{c}");
        assert!(html.contains("No traffic seen yet"));
        assert!(!html.contains("<script"), "no script, nothing from outside");
    }

    #[test]
    fn names_are_escaped() {
        let t = vec![span("a", None, "<b>evil</b>", 1, 1)];
        let html = page(
            &Meta {
                title: "x & y".into(),
                problems: vec!["pod <p> failed".into()],
                ..Meta::default()
            },
            &Graph::default(),
            &[t],
        );
        assert!(!html.contains("<b>evil</b>"));
        assert!(html.contains("&lt;b&gt;evil&lt;/b&gt;"));
        assert!(html.contains("<li>pod &lt;p&gt; failed</li>"));
        assert!(html.contains("<title>x &amp; y</title>"));
    }
}
