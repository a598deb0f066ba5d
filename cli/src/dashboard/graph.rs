//! The service graph from metric rates, as Kiali draws a versioned-app graph:
//! workloads and services are nodes; a request from workload A to service S
//! answered by workload B is two edges, A→S and S→B. Traffic is counted from
//! the caller's report (`reporter="source"`), or from the callee's when the
//! caller has no sidecar (`source_workload="unknown"`); the callee's report
//! also says whether the connection was mutual TLS
//! (`connection_security_policy="mutual_tls"`), which only it can know.
//! Errors are 5xx answers and requests that got no answer (code 0).

use std::collections::BTreeMap;

use super::prom::{Labels, Sample};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Traffic from outside the mesh (no sidecar on the caller).
    External,
    Gateway,
    Workload,
    Service,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::External => "external",
            Kind::Gateway => "gateway",
            Kind::Workload => "workload",
            Kind::Service => "service",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// `workload:NS/NAME`, `service:NS/NAME` or `external:unknown`.
    pub id: String,
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

/// Requests (or, for TCP, connections and bytes) per second and their latency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    pub rps: f64,
    pub errors: f64,
    /// Duration histogram: upper bound (`le` as written) → rate of requests at or below it.
    pub buckets: BTreeMap<String, f64>,
    /// TCP: connections opened and bytes (both ways) per second.
    pub cps: f64,
    pub bytes: f64,
}

impl Traffic {
    pub fn error_pct(&self) -> f64 {
        if self.rps > 0.0 {
            100.0 * self.errors / self.rps
        } else {
            0.0
        }
    }

    /// `histogram_quantile(q, …)` over the buckets, in milliseconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(q, &self.buckets)
    }

    fn add(&mut self, o: &Traffic) {
        self.rps += o.rps;
        self.errors += o.errors;
        self.cps += o.cps;
        self.bytes += o.bytes;
        for (le, v) in &o.buckets {
            *self.buckets.entry(le.clone()).or_default() += v;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub tcp: bool,
    pub traffic: Traffic,
    /// The callee reported mutual TLS, and never plaintext, on this edge.
    pub mtls: bool,
    plaintext_seen: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub nodes: BTreeMap<String, Node>,
    pub edges: Vec<Edge>,
}

/// Prometheus's `histogram_quantile`: linear interpolation inside the bucket
/// holding the rank; the highest finite bound when it falls in `+Inf`.
pub fn quantile(q: f64, buckets: &BTreeMap<String, f64>) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|(le, v)| {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, *v))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last().filter(|l| l.0.is_infinite())?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for (le, count) in &b {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lo);
            }
            let inside = count - below;
            if inside <= 0.0 {
                return Some(*le);
            }
            return Some(lo + (le - lo) * (rank - below) / inside);
        }
        lo = *le;
        below = *count;
    }
    Some(lo)
}

fn label<'a>(l: &'a Labels, k: &str) -> &'a str {
    l.get(k).map(String::as_str).unwrap_or("")
}

fn known(v: &str) -> bool {
    !v.is_empty() && v != "unknown"
}

fn workload(ns: &str, name: &str) -> Node {
    Node {
        id: format!("workload:{ns}/{name}"),
        // Istio's gateways are workloads named so (istio-ingressgateway, ...).
        kind: if name.contains("gateway") {
            Kind::Gateway
        } else {
            Kind::Workload
        },
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

/// The service a series went to: its short name and namespace, from the
/// `destination_service_*` labels or else the host in `destination_service`.
fn service(l: &Labels) -> Node {
    let host = label(l, "destination_service");
    let mut parts = host.split('.');
    let name = Some(label(l, "destination_service_name"))
        .filter(|n| known(n))
        .or(parts.next().filter(|n| known(n)))
        .unwrap_or("unknown");
    let ns = Some(label(l, "destination_service_namespace"))
        .filter(|n| known(n))
        .or(parts.next())
        .unwrap_or("unknown");
    Node {
        id: format!("service:{ns}/{name}"),
        kind: Kind::Service,
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

impl Graph {
    fn node(&mut self, n: Node) -> String {
        let id = n.id.clone();
        self.nodes.entry(id.clone()).or_insert(n);
        id
    }

    fn edge(&mut self, from: &str, to: &str, tcp: bool) -> &mut Edge {
        let i = match self
            .edges
            .iter()
            .position(|e| e.from == from && e.to == to && e.tcp == tcp)
        {
            Some(i) => i,
            None => {
                self.edges.push(Edge {
                    from: from.to_string(),
                    to: to.to_string(),
                    tcp,
                    traffic: Traffic::default(),
                    mtls: false,
                    plaintext_seen: false,
                });
                self.edges.len() - 1
            }
        };
        &mut self.edges[i]
    }

    /// Inbound (edges into the workload) and outbound traffic of one node.
    pub fn traffic_of(&self, id: &str) -> (Traffic, Traffic) {
        let (mut inb, mut out) = (Traffic::default(), Traffic::default());
        for e in self.edges.iter().filter(|e| !e.tcp) {
            if e.to == id {
                inb.add(&e.traffic);
            }
            if e.from == id {
                out.add(&e.traffic);
            }
        }
        (inb, out)
    }
}

/// The graph of a set of rate samples (the [`super::prom::FAMILIES`]).
pub fn build(samples: &[Sample]) -> Graph {
    let mut g = Graph::default();
    for s in samples {
        let l = &s.labels;
        let tcp = s.name.starts_with("istio_tcp_");
        let reporter = label(l, "reporter");
        let src_wl = label(l, "source_workload");
        let from = if known(src_wl) {
            let ns = Some(label(l, "source_workload_namespace"))
                .filter(|n| known(n))
                .unwrap_or("unknown");
            g.node(workload(ns, src_wl))
        } else {
            g.node(Node {
                id: "external:unknown".into(),
                kind: Kind::External,
                namespace: String::new(),
                name: "unknown".into(),
            })
        };
        let svc = g.node(service(l));
        let dst_wl = label(l, "destination_workload");
        let to = known(dst_wl).then(|| {
            let ns = Some(label(l, "destination_workload_namespace"))
                .filter(|n| known(n))
                .unwrap_or("unknown");
            g.node(workload(ns, dst_wl))
        });
        let counts = reporter == "source" || (reporter == "destination" && !known(src_wl));
        let policy = label(l, "connection_security_policy");
        let mut hops = vec![(from, svc.clone())];
        hops.extend(to.map(|t| (svc, t)));
        for (a, b) in hops {
            let e = g.edge(&a, &b, tcp);
            if reporter == "destination" {
                match policy {
                    "mutual_tls" => e.mtls = !e.plaintext_seen,
                    "none" => {
                        e.plaintext_seen = true;
                        e.mtls = false;
                    }
                    _ => {}
                }
            }
            if !counts {
                continue;
            }
            let t = &mut e.traffic;
            match s.name.as_str() {
                "istio_requests_total" => {
                    t.rps += s.value;
                    let code = label(l, "response_code");
                    if code.starts_with('5') || code == "0" {
                        t.errors += s.value;
                    }
                }
                "istio_request_duration_milliseconds_bucket" => {
                    *t.buckets.entry(label(l, "le").to_string()).or_default() += s.value;
                }
                "istio_tcp_connections_opened_total" => t.cps += s.value,
                "istio_tcp_sent_bytes_total" | "istio_tcp_received_bytes_total" => {
                    t.bytes += s.value
                }
                _ => {}
            }
        }
    }
    g.edges
        .sort_by(|a, b| (&a.from, &a.to, a.tcp).cmp(&(&b.from, &b.to, b.tcp)));
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::prom::parse;

    /// productpage → reviews (answered by reviews-v2), both sides reporting,
    /// the callee saying mutual TLS; one 503 among four; a TCP edge; a call
    /// from outside the mesh seen only by the callee.
    const RATES: &str = r#"
istio_requests_total{reporter="source",source_workload="productpage-v1",source_workload_namespace="default",destination_service="reviews.default.svc.cluster.local",destination_service_name="reviews",destination_service_namespace="default",destination_workload="reviews-v2",destination_workload_namespace="default",response_code="200",connection_security_policy="unknown"} 3
istio_requests_total{reporter="source",source_workload="productpage-v1",source_workload_namespace="default",destination_service_name="reviews",destination_service_namespace="default",destination_workload="reviews-v2",destination_workload_namespace="default",response_code="503",connection_security_policy="unknown"} 1
istio_requests_total{reporter="destination",source_workload="productpage-v1",source_workload_namespace="default",destination_service_name="reviews",destination_service_namespace="default",destination_workload="reviews-v2",destination_workload_namespace="default",response_code="200",connection_security_policy="mutual_tls"} 3
istio_request_duration_milliseconds_bucket{reporter="source",source_workload="productpage-v1",source_workload_namespace="default",destination_service_name="reviews",destination_service_namespace="default",destination_workload="reviews-v2",destination_workload_namespace="default",le="10"} 2
istio_request_duration_milliseconds_bucket{reporter="source",source_workload="productpage-v1",source_workload_namespace="default",destination_service_name="reviews",destination_service_namespace="default",destination_workload="reviews-v2",destination_workload_namespace="default",le="100"} 4
istio_request_duration_milliseconds_bucket{reporter="source",source_workload="productpage-v1",source_workload_namespace="default",destination_service_name="reviews",destination_service_namespace="default",destination_workload="reviews-v2",destination_workload_namespace="default",le="+Inf"} 4
istio_requests_total{reporter="destination",source_workload="unknown",destination_service_name="details",destination_service_namespace="default",destination_workload="details-v1",destination_workload_namespace="default",response_code="200",connection_security_policy="none"} 2
istio_requests_total{reporter="source",source_workload="istio-ingressgateway",source_workload_namespace="istio-system",destination_service_name="productpage",destination_service_namespace="default",destination_workload="productpage-v1",destination_workload_namespace="default",response_code="200"} 5
istio_tcp_sent_bytes_total{reporter="source",source_workload="reviews-v2",source_workload_namespace="default",destination_service_name="ratings-tcp",destination_service_namespace="default",destination_workload="ratings-v1",destination_workload_namespace="default"} 100
istio_tcp_connections_opened_total{reporter="source",source_workload="reviews-v2",source_workload_namespace="default",destination_service_name="ratings-tcp",destination_service_namespace="default",destination_workload="ratings-v1",destination_workload_namespace="default"} 1
"#;

    fn edge<'a>(g: &'a Graph, from: &str, to: &str) -> &'a Edge {
        g.edges
            .iter()
            .find(|e| e.from == from && e.to == to)
            .unwrap_or_else(|| panic!("no edge {from} -> {to}: {:#?}", g.edges))
    }

    #[test]
    fn workloads_and_services_become_nodes_and_edges_with_rates() {
        let g = build(&parse(RATES));
        let pp = "workload:default/productpage-v1";
        let e = edge(&g, pp, "service:default/reviews");
        // The caller's report counts: 3 + 1, one of them an error.
        assert_eq!(e.traffic.rps, 4.0);
        assert_eq!(e.traffic.error_pct(), 25.0);
        assert!(e.mtls, "the callee reported mutual_tls");
        let e2 = edge(&g, "service:default/reviews", "workload:default/reviews-v2");
        assert_eq!(e2.traffic.rps, 4.0);
        assert!(e2.mtls);
        // Half the requests took ≤10 ms: p50 at the bucket's top; p99 between 10 and 100.
        assert_eq!(e.traffic.quantile(0.5), Some(10.0));
        let p99 = e.traffic.quantile(0.99).unwrap();
        assert!((p99 - 98.2).abs() < 1e-9, "{p99}");
        // From outside the mesh: the callee's report counts; plaintext, no lock.
        let ext = edge(&g, "external:unknown", "service:default/details");
        assert_eq!(ext.traffic.rps, 2.0);
        assert!(!ext.mtls);
        assert_eq!(g.nodes["external:unknown"].kind, Kind::External);
        assert_eq!(
            g.nodes["workload:istio-system/istio-ingressgateway"].kind,
            Kind::Gateway
        );
        // TCP: connections and bytes, on an edge of its own.
        let t = edge(
            &g,
            "workload:default/reviews-v2",
            "service:default/ratings-tcp",
        );
        assert!(t.tcp);
        assert_eq!((t.traffic.cps, t.traffic.bytes), (1.0, 100.0));
        // Workload detail: what productpage sends; what its service receives.
        let (inb, out) = g.traffic_of(pp);
        assert_eq!(inb.rps, 5.0, "from the gateway, through the service");
        assert_eq!(out.rps, 4.0);
        let (svc_in, _) = g.traffic_of("service:default/productpage");
        assert_eq!(svc_in.rps, 5.0);
    }

    #[test]
    fn quantile_is_prometheus_histogram_quantile() {
        let b = |v: &[(&str, f64)]| v.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(quantile(0.5, &b(&[("+Inf", 0.0)])), None);
        assert_eq!(quantile(0.5, &b(&[("1", 1.0)])), None, "no +Inf bucket");
        // Everything in the first bucket: interpolated from 0.
        assert_eq!(quantile(0.5, &b(&[("10", 4.0), ("+Inf", 4.0)])), Some(5.0));
        // In +Inf: the highest finite bound.
        assert_eq!(
            quantile(0.99, &b(&[("10", 1.0), ("+Inf", 4.0)])),
            Some(10.0)
        );
    }

    #[test]
    fn plaintext_on_an_edge_takes_the_lock_away() {
        let text = "istio_requests_total{reporter=\"destination\",source_workload=\"a\",source_workload_namespace=\"n\",destination_service_name=\"b\",destination_service_namespace=\"n\",destination_workload=\"b\",destination_workload_namespace=\"n\",connection_security_policy=\"mutual_tls\",response_code=\"200\"} 1\n\
istio_requests_total{reporter=\"destination\",source_workload=\"a\",source_workload_namespace=\"n\",destination_service_name=\"b\",destination_service_namespace=\"n\",destination_workload=\"b\",destination_workload_namespace=\"n\",connection_security_policy=\"none\",response_code=\"200\"} 1\n";
        let g = build(&parse(text));
        assert!(g.edges.iter().all(|e| !e.mtls), "{:#?}", g.edges);
        assert!(
            g.edges.iter().all(|e| e.traffic.rps == 0.0),
            "source side counts"
        );
    }
}
