//! The Prometheus of the test: Debian's `prometheus` in the mesh's node
//! namespace, configured as a cluster's would be (file-SD targets from the
//! mesh's Pod objects, Istio's relabelling), and queried over its HTTP API.
//! Only the test's phases use it; it imports none of them.

use crate::bookinfo::NS;
use crate::common::Local;
use crate::procs::Proc;
use crate::series::Series;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Prometheus's port inside the node namespace (a namespace of its own: free).
pub const PROM: &str = "127.0.0.1:9090";

/// A Prometheus process in the node namespace, killed on drop.
pub struct Prometheus {
    netns: String,
    pub process: Proc,
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
    pub fn start(mesh: &Local) -> Prometheus {
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
            process: Proc(child),
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
    pub fn query(&self, q: &str) -> Series {
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
    pub fn until(&self, q: &str, ok: impl Fn(&Series) -> bool) -> Series {
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
