//! The service graph as inline SVG, laid out on the server: columns by call
//! depth (callers left of callees; ingress gateways and outside callers at the
//! left edge, gateways that receive traffic at the right edge), one band per
//! namespace. Every node and edge carries `data-*` attributes with its values
//! so the page can be checked (and scripted) without reading pixels.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::graph::{Edge, Graph, Kind};

const COL_W: f64 = 290.0;
const NODE_W: f64 = 140.0;
const NODE_H: f64 = 40.0;
const ROW_H: f64 = 66.0;
const BAND_PAD: f64 = 30.0;
const BAND_GAP: f64 = 14.0;
const LEFT: f64 = 24.0;

/// Text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The anchor of a workload's detail row (`#workload-NS-NAME`).
pub fn anchor(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub namespace: String,
    pub y: f64,
    pub h: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Node id → top-left corner.
    pub pos: BTreeMap<String, (f64, f64)>,
    pub bands: Vec<Band>,
    pub width: f64,
    pub height: f64,
}

/// Column of every node: longest call chain leading to it (bounded, so a
/// cycle cannot loop), gateways at the edges.
fn columns(g: &Graph) -> BTreeMap<String, usize> {
    let mut col: BTreeMap<String, usize> = g.nodes.keys().map(|k| (k.clone(), 0)).collect();
    let limit = g.nodes.len();
    for _ in 0..limit {
        let mut changed = false;
        for e in g.edges.iter().filter(|e| e.from != e.to) {
            let next = (col[&e.from] + 1).min(limit);
            if col[&e.to] < next {
                col.insert(e.to.clone(), next);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let gateway = |id: &str| g.nodes[id].kind == Kind::Gateway;
    let receives = |id: &str| g.edges.iter().any(|e| e.to == id);
    let last = col
        .iter()
        .filter(|(id, _)| !gateway(id))
        .map(|(_, c)| *c)
        .max()
        .unwrap_or(0);
    for (id, c) in col.iter_mut() {
        if gateway(id) {
            *c = if receives(id) { last + 1 } else { 0 };
        }
    }
    col
}

pub fn layout(g: &Graph) -> Layout {
    let col = columns(g);
    // Namespaces in the order their leftmost node appears, then by name.
    let mut by_ns: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in g.nodes.values() {
        by_ns.entry(&n.namespace).or_default().push(&n.id);
    }
    let mut order: Vec<(&str, Vec<&str>)> = by_ns.into_iter().collect();
    order.sort_by_key(|(ns, ids)| (ids.iter().map(|i| col[*i]).min().unwrap_or(0), *ns));
    let mut pos = BTreeMap::new();
    let mut bands = Vec::new();
    let mut y = 10.0;
    let mut max_col = 0;
    for (ns, mut ids) in order {
        ids.sort_by_key(|id| (g.nodes[*id].kind, g.nodes[*id].name.clone()));
        let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
        for id in &ids {
            let c = col[*id];
            max_col = max_col.max(c);
            let r = rows.entry(c).or_default();
            pos.insert(
                id.to_string(),
                (LEFT + c as f64 * COL_W, y + BAND_PAD + *r as f64 * ROW_H),
            );
            *r += 1;
        }
        let n = rows.values().copied().max().unwrap_or(1) as f64;
        let h = BAND_PAD + n * ROW_H - (ROW_H - NODE_H) + 14.0;
        bands.push(Band {
            namespace: ns.to_string(),
            y,
            h,
        });
        y += h + BAND_GAP;
    }
    Layout {
        pos,
        bands,
        width: LEFT * 2.0 + max_col as f64 * COL_W + NODE_W,
        height: y.max(60.0),
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The label an edge shows.
pub fn edge_label(e: &Edge) -> String {
    let t = &e.traffic;
    if e.tcp {
        return format!("{} conn/s · {} B/s", fmt_rate(t.cps), fmt_rate(t.bytes));
    }
    let mut s = format!("{} rps", fmt_rate(t.rps));
    if t.errors > 0.0 {
        let _ = write!(s, " · {:.1}% err", t.error_pct());
    }
    if let Some(p) = t.quantile(0.99) {
        let _ = write!(s, " · p99 {} ms", fmt_rate(p));
    }
    s
}

fn edge_color(e: &Edge) -> (&'static str, bool) {
    let t = &e.traffic;
    let active = if e.tcp {
        t.cps > 0.0 || t.bytes > 0.0
    } else {
        t.rps > 0.0
    };
    let c = if !active {
        "#b8b8b8"
    } else if e.tcp {
        "#4a78c2"
    } else if t.error_pct() > 5.0 {
        "#d33b3b"
    } else if t.errors > 0.0 {
        "#e69a17"
    } else {
        "#3a9a5b"
    };
    (c, active)
}

/// The point at `t` of the cubic Bézier curve p0..p3.
fn bezier(t: f64, p0: (f64, f64), p1: (f64, f64), p2: (f64, f64), p3: (f64, f64)) -> (f64, f64) {
    let u = 1.0 - t;
    let (a, b, c, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
    (
        a * p0.0 + b * p1.0 + c * p2.0 + d * p3.0,
        a * p0.1 + b * p1.1 + c * p2.1 + d * p3.1,
    )
}

/// A padlock, 10×12, at (x, y).
fn lock(x: f64, y: f64) -> String {
    format!(
        "<g class=\"lock\" transform=\"translate({x:.1},{y:.1})\"><title>mTLS (connection_security_policy=mutual_tls)</title>\
<path d=\"M2 5 V3.5 a3 3 0 0 1 6 0 V5\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.4\"/>\
<rect x=\"0.5\" y=\"5\" width=\"9\" height=\"7\" rx=\"1.2\" fill=\"#333\"/></g>"
    )
}

pub fn render(g: &Graph) -> String {
    let l = layout(g);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" font-size=\"12\">\
<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0 L10 5 L0 10 z\" fill=\"#666\"/></marker></defs>",
        w = l.width,
        h = l.height
    );
    for b in &l.bands {
        let name = if b.namespace.is_empty() {
            "outside the mesh"
        } else {
            &b.namespace
        };
        let _ = write!(
            s,
            "<g class=\"namespace\" data-namespace=\"{ns}\"><rect x=\"6\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"8\" fill=\"#f6f7f9\" stroke=\"#d5d9e0\"/>\
<text x=\"16\" y=\"{ty:.1}\" fill=\"#667\" font-weight=\"bold\">namespace {name}</text></g>",
            ns = esc(&b.namespace),
            y = b.y,
            w = l.width - 12.0,
            h = b.h,
            ty = b.y + 19.0,
            name = esc(name)
        );
    }
    for e in &g.edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (l.pos.get(&e.from), l.pos.get(&e.to)) else {
            continue;
        };
        let (ax, ay) = (x1 + NODE_W, y1 + NODE_H / 2.0);
        let (bx, by) = (x2, y2 + NODE_H / 2.0);
        let bend = ((bx - ax).abs() / 2.0).max(60.0);
        let (c1x, c2x) = (ax + bend, bx - bend);
        // The label sits on the curve away from the service that edges fan
        // out of (or into), so the labels of a fan stay by their own rows; on a
        // flat edge, above the line.
        let kind = |id: &str| g.nodes.get(id).map(|n| n.kind);
        let t = if kind(&e.from) == Some(Kind::Service) {
            0.75
        } else if kind(&e.to) == Some(Kind::Service) {
            0.25
        } else {
            0.5
        };
        let (mx, my) = bezier(t, (ax, ay), (c1x, ay), (c2x, by), (bx, by));
        let my = my - if (ay - by).abs() < 1.0 { 9.0 } else { 0.0 };
        let (color, active) = edge_color(e);
        let t = &e.traffic;
        let label = edge_label(e);
        let _ = write!(
            s,
            "<g class=\"edge\" data-from=\"{from}\" data-to=\"{to}\" data-protocol=\"{proto}\" data-rps=\"{rps:.4}\" data-error-pct=\"{err:.2}\" data-p50-ms=\"{p50}\" data-p99-ms=\"{p99}\" data-mtls=\"{mtls}\">\
<title>{from} → {to}: {label}{mt}</title>\
<path d=\"M{ax:.1} {ay:.1} C{c1x:.1} {ay:.1} {c2x:.1} {by:.1} {bx:.1} {by:.1}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"{sw}\"{dash} marker-end=\"url(#arrow)\"/>",
            from = esc(&e.from),
            to = esc(&e.to),
            proto = if e.tcp { "tcp" } else { "http" },
            rps = if e.tcp { t.cps } else { t.rps },
            err = t.error_pct(),
            p50 = t.quantile(0.5).map(|v| format!("{v:.2}")).unwrap_or_default(),
            p99 = t.quantile(0.99).map(|v| format!("{v:.2}")).unwrap_or_default(),
            mtls = e.mtls,
            mt = if e.mtls { " (mTLS)" } else { "" },
            sw = if active { 2.0 } else { 1.2 },
            dash = if active { "" } else { " stroke-dasharray=\"4 3\"" },
        );
        let w = label.chars().count() as f64 * 5.9 + if e.mtls { 16.0 } else { 6.0 };
        // Inside the gap between the two columns when it fits.
        let (lo, hi) = (ax.min(bx) + w / 2.0 + 2.0, ax.max(bx) - w / 2.0 - 2.0);
        let mx = if lo <= hi {
            mx.clamp(lo, hi)
        } else {
            (ax + bx) / 2.0
        };
        let _ = write!(
            s,
            "<rect x=\"{rx:.1}\" y=\"{ry:.1}\" width=\"{w:.1}\" height=\"16\" rx=\"3\" fill=\"#fff\" fill-opacity=\"0.9\"/>",
            rx = mx - w / 2.0,
            ry = my - 12.0
        );
        let mut tx = mx - w / 2.0 + 3.0;
        if e.mtls {
            s.push_str(&lock(tx, my - 10.0));
            tx += 13.0;
        }
        let _ = write!(
            s,
            "<text class=\"edge-label\" x=\"{tx:.1}\" y=\"{ty:.1}\" fill=\"#333\" font-size=\"10.5\">{}</text></g>",
            esc(&label),
            ty = my
        );
    }
    for n in g.nodes.values() {
        let Some(&(x, y)) = l.pos.get(&n.id) else {
            continue;
        };
        let (fill, stroke, rx) = match n.kind {
            Kind::Workload => ("#e8f1fb", "#3b6ea5", 4.0),
            Kind::Service => ("#f1ecfb", "#7a5ab5", 20.0),
            Kind::Gateway => ("#fff2dc", "#c77d00", 4.0),
            Kind::External => ("#eeeeee", "#888888", 4.0),
        };
        let _ = write!(
            s,
            "<a href=\"#{anchor}\"><g class=\"node\" data-id=\"{id}\" data-kind=\"{kind}\" data-namespace=\"{ns}\" data-name=\"{name}\">\
<title>{kind} {ns}/{name}</title>\
<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"{rx}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"/>\
<text x=\"{tx:.1}\" y=\"{ty1:.1}\" text-anchor=\"middle\" font-weight=\"bold\" fill=\"#222\">{name}</text>\
<text x=\"{tx:.1}\" y=\"{ty2:.1}\" text-anchor=\"middle\" fill=\"#667\" font-size=\"10\">{kind}</text></g></a>",
            anchor = anchor(&n.id),
            id = esc(&n.id),
            kind = n.kind.as_str(),
            ns = esc(&n.namespace),
            name = esc(&n.name),
            tx = x + NODE_W / 2.0,
            ty1 = y + 17.0,
            ty2 = y + 32.0,
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::graph::build;
    use crate::dashboard::prom::parse;

    fn line(src: &str, sns: &str, svc: &str, dst: &str, policy: &str, reporter: &str) -> String {
        format!(
            "istio_requests_total{{reporter=\"{reporter}\",source_workload=\"{src}\",source_workload_namespace=\"{sns}\",destination_service_name=\"{svc}\",destination_service_namespace=\"default\",destination_workload=\"{dst}\",destination_workload_namespace=\"default\",response_code=\"200\",connection_security_policy=\"{policy}\"}} 2\n"
        )
    }

    fn graph() -> Graph {
        // source workload, its namespace, service, destination workload, policy, reporter
        let calls = [
            "istio-ingressgateway istio-system productpage productpage-v1 unknown source",
            "productpage-v1 default reviews reviews-v1 unknown source",
            "productpage-v1 default reviews reviews-v1 mutual_tls destination",
            "reviews-v1 default ratings ratings-v1 unknown source",
        ];
        let text: String = calls
            .iter()
            .map(|c| {
                let f: Vec<&str> = c.split(' ').collect();
                line(f[0], f[1], f[2], f[3], f[4], f[5])
            })
            .collect();
        build(&parse(&text))
    }

    #[test]
    fn callers_sit_left_of_callees_and_namespaces_are_bands() {
        let g = graph();
        let l = layout(&g);
        let x = |id: &str| l.pos[id].0;
        assert_eq!(x("workload:istio-system/istio-ingressgateway"), LEFT);
        assert!(x("workload:default/productpage-v1") < x("service:default/reviews"));
        assert!(x("service:default/reviews") < x("workload:default/reviews-v1"));
        assert!(x("workload:default/reviews-v1") < x("workload:default/ratings-v1"));
        let names: Vec<&str> = l.bands.iter().map(|b| b.namespace.as_str()).collect();
        assert_eq!(names, ["istio-system", "default"]);
        // Every node lies inside its namespace's band.
        for n in g.nodes.values() {
            let b = l.bands.iter().find(|b| b.namespace == n.namespace).unwrap();
            let y = l.pos[&n.id].1;
            assert!(y >= b.y && y + NODE_H <= b.y + b.h, "{n:?} {b:?}");
        }
    }

    #[test]
    fn edges_carry_their_values_and_the_lock_only_where_mtls() {
        let svg = render(&graph());
        let edge = |from: &str, to: &str| {
            let start = svg
                .find(&format!("data-from=\"{from}\" data-to=\"{to}\""))
                .unwrap_or_else(|| panic!("no edge {from} -> {to}"));
            let end = start + svg[start..].find("</text></g>").unwrap();
            svg[start..end].to_string()
        };
        let pr = edge("workload:default/productpage-v1", "service:default/reviews");
        assert!(pr.contains("data-rps=\"2.0000\""), "{pr}");
        assert!(pr.contains("data-mtls=\"true\""), "{pr}");
        assert!(pr.contains("class=\"lock\""), "{pr}");
        assert!(pr.ends_with(">2.0 rps"), "{pr}");
        let rr = edge("workload:default/reviews-v1", "service:default/ratings");
        assert!(
            rr.contains("data-mtls=\"false\"") && !rr.contains("class=\"lock\""),
            "{rr}"
        );
        assert!(svg.contains("data-kind=\"gateway\" data-namespace=\"istio-system\" data-name=\"istio-ingressgateway\""));
        assert!(svg.contains(">namespace istio-system</text>"));
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
