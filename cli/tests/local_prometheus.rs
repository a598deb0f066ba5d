//! Bookinfo on `meshctl local` scraped by a real Prometheus (Debian's
//! `prometheus`), which then answers the queries Kiali's graph and Istio's
//! Grafana dashboards ask. Prometheus runs in the mesh's node namespace, where a
//! cluster's Prometheus pod would be: it reaches every pod IP on the bridge and
//! the agent's monitoring port. Its targets are the Pod objects the mesh holds,
//! kept or dropped, and pointed at a path and port, by their `prometheus.io/*`
//! annotations with the relabelling of Istio's Prometheus sample; the agent is
//! scraped as `istiod` is.

mod common;
mod procs;

use common::page::{self, attr, edge, num};
use common::*;
use procs::Proc;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const PRODUCTPAGE: &str = "productpage-v1-0";
const REVIEWS_V2: &str = "reviews-v2-0";
const NS: &str = "default";
/// Prometheus's port inside the node namespace (a namespace of its own: free).
const PROM: &str = "127.0.0.1:9090";

/// Labels Kiali's graph groups `istio_requests_total` by, each of which it
/// requires on a series (it skips series without them); `grpc_response_status`
/// is optional there. From kiali's graph/telemetry/istio/istio.go.
const KIALI_HTTP: [&str; 16] = [
    "source_cluster",
    "source_workload_namespace",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_cluster",
    "destination_service_namespace",
    "destination_service",
    "destination_service_name",
    "destination_workload_namespace",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "response_flags",
];
/// What Kiali's security-policy appender adds to its group (destination telemetry).
const KIALI_SECURITY: [&str; 3] = [
    "source_principal",
    "destination_principal",
    "connection_security_policy",
];

/// A TCP Service in front of ratings: its port name makes both sidecars proxy
/// it as opaque TCP (the echo app answers the HTTP inside).
const RATINGS_TCP: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ratings-tcp\n  labels: {app: ratings}\nspec:\n  selector: {app: ratings}\n  ports:\n  - {name: tcp-ratings, port: 9079, targetPort: 9080}\n";

type Series = Vec<(BTreeMap<String, String>, f64)>;

/// A Prometheus process in the node namespace, killed on drop.
struct Prometheus {
    netns: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

/// `prometheus.io/scrape` → `prometheus_io_scrape`, as Kubernetes service
/// discovery names annotation meta labels.
fn meta_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// File-SD targets from the Pod objects the mesh publishes: each pod's IP and
/// the meta labels Kubernetes SD would give it (namespace, name, labels,
/// annotations).
fn pod_targets(mesh: &Local) -> serde_json::Value {
    let dir = mesh.root.join(&mesh.name).join("config").join("pods");
    let mut targets = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("yaml") {
            continue; // a file being written
        }
        let text = std::fs::read_to_string(path).unwrap();
        let pod: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let Some(ip) = pod["status"]["podIP"].as_str() else {
            continue;
        };
        let mut labels = BTreeMap::new();
        let md = &pod["metadata"];
        labels.insert(
            "__meta_kubernetes_namespace".to_string(),
            md["namespace"].as_str().unwrap_or(NS).to_string(),
        );
        labels.insert(
            "__meta_kubernetes_pod_name".to_string(),
            md["name"].as_str().unwrap().to_string(),
        );
        for (kind, field) in [("label", "labels"), ("annotation", "annotations")] {
            for (k, v) in md[field].as_object().into_iter().flatten() {
                labels.insert(
                    format!("__meta_kubernetes_pod_{kind}_{}", meta_name(k)),
                    v.as_str().unwrap_or_default().to_string(),
                );
            }
        }
        targets.push(serde_json::json!({"targets": [ip], "labels": labels}));
    }
    serde_json::Value::Array(targets)
}

/// The scrape jobs: pods by their annotations (the relabelling of Istio's
/// Prometheus addon), and the agent's monitoring port as `istiod`'s.
fn config(sd_file: &std::path::Path) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
- job_name: kubernetes-pods
  file_sd_configs:
  - files: ['{sd}']
    refresh_interval: 1s
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: true
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
    action: replace
    target_label: __metrics_path__
    regex: (.+)
  - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
    action: replace
    regex: ([^:]+)(?::\d+)?;(\d+)
    replacement: $1:$2
    target_label: __address__
  - action: labelmap
    regex: __meta_kubernetes_pod_label_(.+)
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
- job_name: istiod
  metrics_path: /metrics
  static_configs:
  - targets: ['127.0.0.1:15014']
    labels: {{app: istiod}}
"#,
        sd = sd_file.display()
    )
}

impl Prometheus {
    fn start(mesh: &Local) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("pods.json");
        std::fs::write(&sd, pod_targets(mesh).to_string()).unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config(&sd)).unwrap();
        let netns = format!("ml-{}-node", mesh.name);
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, "prometheus"])
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={PROM}"))
            .arg("--log.level=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (tests/install-deps.sh installs it)");
        let p = Prometheus {
            netns,
            _proc: Proc(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.get("/-/ready").as_deref() != Some("Prometheus Server is Ready.\n") {
            assert!(
                Instant::now() < deadline,
                "prometheus never got ready: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// A GET from inside the node namespace; `None` when it failed.
    fn get(&self, path_and_query: &str) -> Option<String> {
        self.curl(&[&format!("http://{PROM}{path_and_query}")])
    }

    fn curl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-sS",
                "--max-time",
                "5",
            ])
            .args(args)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An instant query over `/api/v1/query`: each series' labels and value.
    fn query(&self, q: &str) -> Series {
        let url = format!("http://{PROM}/api/v1/query");
        let body = self
            .curl(&["-G", &url, "--data-urlencode", &format!("query={q}")])
            .unwrap_or_else(|| panic!("query {q} failed"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                let value = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// Asks `q` until `ok` accepts the answer (scrapes come every second),
    /// for at most 30 s.
    fn until(&self, q: &str, ok: impl Fn(&Series) -> bool) -> Series {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.query(q);
            if ok(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{q} never matched; last answer:\n{r:#?}\nprometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The series whose labels include every `(name, value)` of `want`.
fn find<'a>(r: &'a Series, want: &[(&str, &str)]) -> Vec<&'a (BTreeMap<String, String>, f64)> {
    r.iter()
        .filter(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn has(r: &Series, want: &[(&str, &str)], min: f64) -> bool {
    find(r, want).iter().any(|(_, v)| *v >= min)
}

/// Every label Kiali needs is on every series (Prometheus drops a label whose
/// value is empty, so this also catches empty values).
fn assert_labels(r: &Series, names: &[&str], what: &str) {
    for (l, _) in r {
        for n in names {
            assert!(
                l.get(*n).is_some_and(|v| !v.is_empty()),
                "{what}: series without {n}: {l:?}"
            );
        }
    }
}

/// `n` requests from `pod` to `url`, all answered `code`.
fn traffic(mesh: &Local, pod: &str, url: &str, n: usize, extra: &[&str], code: u16) {
    let res = mesh.calls(pod, url, n, extra);
    assert!(res.iter().all(|(c, _)| *c == code), "{url}: {res:?}");
}

fn group(labels: &[&str]) -> String {
    labels.join(", ")
}

#[test]
fn kiali_and_dashboard_queries_on_bookinfo() {
    let started = Instant::now();
    let mesh = Local::up(&[
        "-f",
        &sample("platform"),
        "-f",
        &sample("networking/destination-rule-all.yaml"),
    ]);
    let tcp_svc = mesh.file("ratings-tcp.yaml", RATINGS_TCP);
    mesh.apply(&tcp_svc, &[REVIEWS_V2]);
    mesh.apply(
        &sample("networking/virtual-service-ratings-test-abort.yaml"),
        &[REVIEWS_V2],
    );
    let prom = Prometheus::start(&mesh);

    // Every sidecar's 15020 and the agent are scraped; productpage's own
    // annotations (port 9080, /metrics) moved to its proxy, which serves the
    // app's metrics after its own.
    let up = prom.until("up", |r| {
        find(r, &[("job", "kubernetes-pods")])
            .iter()
            .filter(|s| s.1 == 1.0)
            .count()
            == 6
            && has(r, &[("job", "istiod")], 1.0)
    });
    for (l, _) in find(&up, &[("job", "kubernetes-pods")]) {
        assert!(l["instance"].ends_with(":15020"), "{l:?}");
    }
    prom.until(r#"mesh_echo_requests_total{pod="productpage-v1-0"}"#, |r| {
        r.len() == 1
    });

    let details = "http://details:9080/details/0";
    let reviews = "http://reviews:9080/reviews/0";
    let ratings = "http://ratings:9080/ratings/0";
    let ratings_tcp = "http://ratings-tcp:9079/ratings/0";
    let jason = ["-H", "end-user: jason"];
    // Rates need two samples of a series: one call on each edge makes the
    // series, the rest (after Prometheus has seen them) make the rates.
    let edges = |n: usize| {
        traffic(&mesh, PRODUCTPAGE, details, n, &[], 200);
        traffic(&mesh, PRODUCTPAGE, reviews, n, &[], 200);
        traffic(&mesh, REVIEWS_V2, ratings, n, &[], 200);
        traffic(&mesh, REVIEWS_V2, ratings, n, &jason, 500);
        for _ in 0..n {
            traffic(&mesh, REVIEWS_V2, ratings_tcp, 1, &[], 200);
        }
    };
    edges(1);
    prom.until(
        r#"sum(istio_requests_total{reporter="source"}) by (destination_service_name, response_code)"#,
        |r| {
            has(r, &[("destination_service_name", "details")], 1.0)
                && has(r, &[("destination_service_name", "reviews")], 1.0)
                && has(r, &[("destination_service_name", "ratings"), ("response_code", "500")], 1.0)
        },
    );
    prom.until(
        r#"sum(istio_tcp_connections_opened_total) by (destination_service_name)"#,
        |r| has(r, &[("destination_service_name", "ratings-tcp")], 1.0),
    );
    // reviews has three versions behind one Service and the sidecar picks
    // among them at random: every version's series must be in Prometheus
    // before the rate phase, or all of that phase's calls may land on
    // versions first seen after them (a series' first sample gives no rate;
    // (2/3)^10 of the time with one version seen).
    let by_version = r#"sum(istio_requests_total{reporter="source",destination_service_name="reviews"}) by (destination_workload)"#;
    let mut more_reviews = 0.0;
    for round in 0.. {
        let seen = prom.query(by_version);
        if seen.len() == 3 {
            break;
        }
        assert!(
            round < 20,
            "reviews versions after {round} rounds: {seen:?}"
        );
        let before: f64 = seen.iter().map(|s| s.1).sum();
        traffic(&mesh, PRODUCTPAGE, reviews, 3, &[], 200);
        more_reviews += 3.0;
        prom.until(by_version, |r| {
            r.iter().map(|s| s.1).sum::<f64>() >= before + 3.0
        });
    }
    let n = 10;
    edges(n);
    let total = (n + 1) as f64;

    // Kiali's graph, source telemetry of the namespace's workloads.
    let mut by = KIALI_HTTP.to_vec();
    by.extend(["grpc_response_status", "connection_security_policy"]);
    let q = format!(
        r#"sum(rate(istio_requests_total{{reporter="source",source_workload_namespace="{NS}"}}[1m])) by ({}) > 0"#,
        group(&by)
    );
    let want_edges: [&[(&str, &str)]; 4] = [
        &[
            ("source_workload", "productpage-v1"),
            ("source_canonical_service", "productpage"),
            ("source_canonical_revision", "v1"),
            ("destination_service", "details.default.svc.cluster.local"),
            ("destination_service_name", "details"),
            ("destination_workload", "details-v1"),
            ("destination_canonical_service", "details"),
            ("destination_canonical_revision", "v1"),
            ("request_protocol", "http"),
            ("response_code", "200"),
            ("response_flags", "-"),
        ],
        &[
            ("source_workload", "productpage-v1"),
            ("destination_service_name", "reviews"),
            ("destination_canonical_service", "reviews"),
            ("response_code", "200"),
        ],
        &[
            ("source_workload", "reviews-v2"),
            ("source_canonical_revision", "v2"),
            ("destination_workload", "ratings-v1"),
            ("response_code", "200"),
        ],
        // The abort never reached ratings: no destination workload, Istio's
        // `unknown`, and the fault-injection flag.
        &[
            ("source_workload", "reviews-v2"),
            ("destination_service", "ratings.default.svc.cluster.local"),
            ("destination_service_name", "ratings"),
            ("destination_workload", "unknown"),
            ("response_code", "500"),
            ("response_flags", "FI"),
        ],
    ];
    let r = prom.until(&q, |r| want_edges.iter().all(|w| has(r, w, 0.0)));
    assert_labels(&r, &KIALI_HTTP, "kiali source query");
    for (l, _) in &r {
        assert_eq!(l["source_cluster"], "Kubernetes", "{l:?}");
        assert_eq!(l["destination_cluster"], "Kubernetes", "{l:?}");
    }

    // Destination telemetry: mutual TLS with both principals (Kiali's
    // security-policy appender).
    let mut by = KIALI_HTTP.to_vec();
    by.extend(KIALI_SECURITY);
    let q = format!(
        r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{NS}"}}[1m])) by ({}) > 0"#,
        group(&by)
    );
    let r = prom.until(&q, |r| {
        has(r, &[("destination_workload", "details-v1")], 0.0)
            && has(r, &[("destination_workload", "ratings-v1")], 0.0)
    });
    assert_labels(&r, &KIALI_HTTP, "kiali destination query");
    assert_labels(&r, &KIALI_SECURITY, "kiali security query");
    let d = find(&r, &[("destination_workload", "details-v1")]);
    assert_eq!(d.len(), 1, "{r:#?}");
    let d = &d[0].0;
    assert_eq!(d["connection_security_policy"], "mutual_tls", "{d:?}");
    assert_eq!(
        d["source_principal"], "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "{d:?}"
    );
    assert_eq!(
        d["destination_principal"], "spiffe://cluster.local/ns/default/sa/bookinfo-details",
        "{d:?}"
    );
    assert!(
        find(&r, &[("response_flags", "FI")]).is_empty(),
        "an aborted call reached its destination: {r:#?}"
    );

    // Exact counts, source and destination agreeing (once the last
    // requests are scraped).
    let want_counts = [
        ("source", "details", "200", total),
        ("destination", "details", "200", total),
        ("source", "reviews", "200", total + more_reviews),
        ("destination", "reviews", "200", total + more_reviews),
        ("source", "ratings", "200", total),
        ("destination", "ratings", "200", total),
        ("source", "ratings", "500", total),
    ];
    prom.until(
        "sum(istio_requests_total) by (reporter, destination_service_name, response_code)",
        |r| {
            want_counts.iter().all(|(reporter, svc, code, want)| {
                let got = find(
                    r,
                    &[
                        ("reporter", reporter),
                        ("destination_service_name", svc),
                        ("response_code", code),
                    ],
                );
                got.iter().map(|(_, v)| v).sum::<f64>() == *want
            })
        },
    );

    // TCP: Kiali's graph asks for sent bytes; the dashboards for connections.
    // Kiali's TCP group: its request group without the per-request labels.
    let tcp_by: Vec<&str> = KIALI_HTTP
        .into_iter()
        .filter(|l| !["request_protocol", "response_code"].contains(l))
        .collect();
    for reporter in ["source", "destination"] {
        let q = format!(
            r#"sum(rate(istio_tcp_sent_bytes_total{{reporter="{reporter}"}}[1m])) by ({}, connection_security_policy, source_principal) > 0"#,
            group(&tcp_by)
        );
        // Each proxy knows itself; the other side by its endpoint (labels,
        // namespace, and for the caller its verified identity): no request
        // carries a workload name over plain TCP.
        let (src, dest): ((&str, &str), (&str, &str)) = if reporter == "source" {
            (
                ("source_workload", "reviews-v2"),
                ("destination_canonical_service", "ratings"),
            )
        } else {
            (
                ("source_canonical_service", "reviews"),
                ("destination_workload", "ratings-v1"),
            )
        };
        let r = prom.until(&q, |r| {
            has(
                r,
                &[
                    src,
                    ("source_canonical_revision", "v2"),
                    ("destination_service_name", "ratings-tcp"),
                    ("destination_workload_namespace", NS),
                    ("destination_canonical_revision", "v1"),
                    dest,
                ],
                0.0,
            )
        });
        assert_labels(&r, &tcp_by, "kiali tcp query");
        if reporter == "destination" {
            let d = find(&r, &[("destination_service_name", "ratings-tcp")]);
            let l = &d[0].0;
            assert_eq!(l["connection_security_policy"], "mutual_tls", "{l:?}");
            assert_eq!(
                l["source_principal"], "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
                "{l:?}"
            );
        }
    }
    // Every connection, on both sides (once the last ones are scraped).
    prom.until(
        r#"sum(istio_tcp_connections_opened_total{destination_service_name="ratings-tcp"}) by (reporter)"#,
        |r| {
            ["source", "destination"]
                .iter()
                .all(|rep| find(r, &[("reporter", rep)]).iter().any(|s| s.1 == total))
        },
    );

    // The workload dashboard's latency and size panels.
    let q = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="source"}[1m])) by (le, destination_workload))"#;
    let r = prom.query(q);
    for w in ["details-v1", "ratings-v1"] {
        let v = find(&r, &[("destination_workload", w)]);
        assert!(
            v.len() == 1 && v[0].1.is_finite() && v[0].1 > 0.0,
            "{w}: {r:#?}"
        );
    }
    for m in ["istio_request_bytes", "istio_response_bytes"] {
        let q = format!(
            r#"histogram_quantile(0.5, sum(rate({m}_bucket{{reporter="destination",destination_workload="details-v1"}}[1m])) by (le))"#
        );
        let r = prom.query(&q);
        assert!(r.len() == 1 && r[0].1.is_finite(), "{q}: {r:#?}");
        let q = format!(
            r#"sum({m}_count{{reporter="destination",destination_workload="details-v1"}})"#
        );
        prom.until(&q, |r| r.first().map(|s| s.1) == Some(total));
    }
    // Every answer of details had a body: the first bucket (up to 1 byte)
    // holds none of them.
    let r = prom.query(
        r#"sum(istio_response_bytes_bucket{reporter="destination",destination_workload="details-v1",le="1"})"#,
    );
    assert_eq!(r[0].1, 0.0, "{r:#?}");

    // The mesh dashboard's component versions: six sidecars and the agent.
    let r = prom.query("sum(istio_build) by (component, tag)");
    assert!(has(&r, &[("component", "proxy")], 6.0), "{r:#?}");
    assert!(has(&r, &[("component", "pilot")], 1.0), "{r:#?}");
    assert_labels(&r, &["tag"], "istio_build");

    // The control-plane dashboard.
    let r = prom.query("sum(pilot_xds)");
    assert_eq!(
        r.first().map(|s| s.1),
        Some(6.0),
        "connected proxies: {r:#?}"
    );
    let r = prom.until("sum(irate(pilot_xds_pushes[1m])) by (type)", |r| {
        !r.is_empty()
    });
    assert_labels(&r, &["type"], "pilot_xds_pushes");
    let r = prom.query("sum(pilot_xds_pushes) by (type)");
    assert!(r.iter().map(|s| s.1).sum::<f64>() >= 6.0, "{r:#?}");
    let r = prom.query("sum(rate(pilot_xds_push_time_bucket[1m])) by (le)");
    assert!(r.iter().any(|(l, _)| l["le"] == "+Inf"), "{r:#?}");
    let r = prom.query("sum(pilot_total_xds_rejects) by (type)");
    assert_labels(&r, &["type"], "pilot_total_xds_rejects");
    assert!(!r.is_empty() && r.iter().all(|s| s.1 == 0.0), "{r:#?}");

    // `meshctl local dashboard --prometheus`: the same graph from these
    // queries. productpage → reviews over mutual TLS; reviews-v2 → ratings
    // half aborted (500, FI), which shows as its error rate; the TCP edge.
    let prom_url = format!("http://{PROM}");
    let (dash, line) = procs::spawn(&mut page::command(&mesh, &["--prometheus", &prom_url]));
    let url = page::url(&line);
    let page = page::until(
        Duration::from_secs(30),
        || page::get(&url),
        |page| {
            let mut miss = Vec::new();
            let pp = "workload:default/productpage-v1";
            let v2 = "workload:default/reviews-v2";
            match edge(page, pp, "service:default/reviews", "http") {
                Some(e)
                    if num(e, "data-rps") > 0.0
                        && attr(e, "data-mtls").as_deref() == Some("true") => {}
                e => miss.push(format!(
                    "productpage -> reviews with a rate and mTLS: {e:?}"
                )),
            }
            match edge(page, v2, "service:default/ratings", "http") {
                Some(e) if (40.0..=60.0).contains(&num(e, "data-error-pct")) => {}
                e => miss.push(format!("reviews-v2 -> ratings with 50 % errors: {e:?}")),
            }
            match edge(page, v2, "service:default/ratings-tcp", "tcp") {
                Some(e) if num(e, "data-rps") > 0.0 => {}
                e => miss.push(format!("reviews-v2 -> ratings-tcp with connections: {e:?}")),
            }
            miss
        },
    );
    assert!(
        page.contains(&format!("metrics: Prometheus at http://{PROM}")),
        "{page}"
    );
    assert!(!page.contains("class=\"problems\""), "{page}");
    drop(dash);

    // Prometheus goes first (it lives in the node namespace), then the mesh.
    let (name, pid) = (mesh.name.clone(), prom._proc.0.id());
    drop(prom);
    drop(mesh);
    assert!(netns_left(&format!("ml-{name}-")).is_empty());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    eprintln!("local_prometheus: {:?}", started.elapsed());
}
