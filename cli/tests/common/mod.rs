//! A local mesh for one test: `meshctl local up` under a unique name and run
//! directory, helpers to call services from inside pods with curl and read the
//! proxies' metrics and config, and `down` on drop (also when the test panics).
#![allow(dead_code)]

pub mod external;
pub mod page;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use mesh_e2e::echo::EchoReply;

pub const BOOKINFO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/bookinfo");

pub fn sample(rel: &str) -> String {
    format!("{BOOKINFO}/{rel}")
}

/// Namespace `shop` (injection on) with an echo app `web` (Service port 80 →
/// 8080) and a `client` pod: pods `shop/web-0` and `shop/client-0`.
pub const SHOP_WEB_AND_CLIENT: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio-injection: enabled}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example/web
        ports:
        - {name: http, containerPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: shop}
spec:
  template:
    metadata:
      labels: {app: client}
    spec:
      containers:
      - name: client
        image: example/client
";

pub struct Local {
    pub name: String,
    pub root: PathBuf,
    pub files: PathBuf,
}

static N: AtomicU32 = AtomicU32::new(0);

impl Local {
    /// `meshctl local up` with `args` (files and flags); panics with its output on failure.
    pub fn up(args: &[&str]) -> Local {
        let l = Local::new();
        let out = l.meshctl(&[&["up"], args].concat());
        assert!(out.status.success(), "up failed:\n{}", text(&out));
        l
    }

    /// A name and run directory, without bringing anything up.
    pub fn new() -> Local {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}x{n}", std::process::id());
        let root = std::env::temp_dir().join(format!("meshctl-local-test-{name}"));
        let files = root.join("inputs");
        std::fs::create_dir_all(&files).unwrap();
        Local { name, root, files }
    }

    /// `meshctl local ARGS` for this mesh. An `up` that does not choose its
    /// gateways gets `--gateways none`: tests not about gateways skip their two
    /// pods (gateway tests pass `--gateways` themselves).
    pub fn meshctl(&self, args: &[&str]) -> Output {
        let mut args = args.to_vec();
        if args.first() == Some(&"up") && !args.contains(&"--gateways") {
            args.extend(["--gateways", "none"]);
        }
        Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(["local", "--name", &self.name, "--root"])
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.meshctl(args);
        assert!(
            out.status.success(),
            "meshctl local {args:?}:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a YAML file for `apply -f` and returns its path.
    pub fn file(&self, name: &str, yaml: &str) -> String {
        let p = self.files.join(name);
        std::fs::write(&p, yaml).unwrap();
        p.display().to_string()
    }

    /// Runs a command in a pod as its app (captured) or as `uid`.
    pub fn exec(&self, pod: &str, uid: Option<u32>, argv: &[&str]) -> Output {
        let uid_s = uid.map(|u| u.to_string());
        let mut args = vec!["exec", pod];
        if let Some(u) = &uid_s {
            args.extend(["--uid", u.as_str()]);
        }
        args.push("--");
        args.extend_from_slice(argv);
        self.meshctl(&args)
    }

    /// `n` GETs of `url` over one curl (one connection, as a client pool would
    /// reuse it) from `pod`: each answer's status and, when it is the echo app's
    /// JSON, the reply.
    pub fn calls(
        &self,
        pod: &str,
        url: &str,
        n: usize,
        extra: &[&str],
    ) -> Vec<(u16, Option<EchoReply>)> {
        let sep = if url.contains('?') { '&' } else { '?' };
        let glob = format!("{url}{sep}call=[1-{n}]");
        let mut argv = vec![
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n@@%{http_code}@@\n",
        ];
        argv.extend_from_slice(extra);
        argv.push(&glob);
        let out = self.exec(pod, None, &argv);
        assert!(out.status.success(), "curl {glob}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut res = Vec::new();
        let mut body = String::new();
        for line in stdout.lines() {
            if let Some(code) = line.strip_prefix("@@").and_then(|l| l.strip_suffix("@@")) {
                res.push((
                    code.parse().unwrap(),
                    serde_json::from_str(body.trim()).ok(),
                ));
                body.clear();
            } else {
                body.push_str(line);
                body.push('\n');
            }
        }
        assert_eq!(res.len(), n, "{stdout}");
        res
    }

    pub fn admin(&self, pod: &str, path: &str) -> String {
        let url = format!("http://127.0.0.1:{path}");
        let out = self.exec(pod, Some(0), &["curl", "-sS", "--max-time", "5", &url]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn metrics(&self, pod: &str) -> String {
        self.admin(pod, "15090/stats/prometheus")
    }

    /// The config version a pod's proxy runs.
    pub fn version(&self, pod: &str) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&self.admin(pod, "15000/config_dump")).unwrap_or_default();
        v["version"].as_u64().unwrap_or(0)
    }

    /// `apply -f file` (or `delete`), then waits (bounded) until every listed
    /// pod's proxy runs a newer config version.
    pub fn change(&self, verb: &str, file: &str, pods: &[&str]) {
        self.changed_by(file, pods, || {
            self.ok(&[verb, "-f", file]);
        })
    }

    /// Runs `act`, then waits (bounded) until every listed pod's proxy runs a
    /// newer config version than before it; `what` names the change.
    pub fn changed_by(&self, what: &str, pods: &[&str], act: impl FnOnce()) {
        let before: Vec<u64> = pods.iter().map(|p| self.version(p)).collect();
        act();
        let deadline = Instant::now() + Duration::from_secs(15);
        for (p, v0) in pods.iter().zip(before) {
            while self.version(p) <= v0 {
                assert!(
                    Instant::now() < deadline,
                    "{p} never got the config of {what}"
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }

    pub fn apply(&self, file: &str, pods: &[&str]) {
        self.change("apply", file, pods)
    }

    /// The node's network namespace (where the pod bridge's gateway address is).
    pub fn node_netns(&self) -> String {
        format!("ml-{}-node", self.name)
    }

    /// The sidecar log lines of `pod` that contain `needle`, once there are at
    /// least `n` (a line is written when its request ends, just after the
    /// answer); asserts there are exactly `n` by then.
    pub fn proxy_log_lines(&self, pod: &str, needle: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.logs(pod, Some("istio-proxy"));
            let got: Vec<String> = log
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_string)
                .collect();
            if got.len() >= n || Instant::now() > deadline {
                assert_eq!(got.len(), n, "{pod}: lines with {needle:?}:\n{log}");
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self, pod: &str, container: Option<&str>) -> String {
        let mut args = vec!["logs", pod];
        if let Some(c) = container {
            args.extend(["-c", c]);
        }
        self.ok(&args)
    }

    /// Makes a pod's app fail (`status=503&every=1`) or heal (`status=0`), from
    /// inside the pod over loopback (not through the mesh).
    pub fn fault(&self, pod: &str, port: u16, query: &str) {
        let url = format!("http://127.0.0.1:{port}/__echo/fault?{query}");
        let out = self.exec(pod, Some(0), &["curl", "-sS", "--max-time", "5", &url]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let out = self.meshctl(&["down"]);
        if !out.status.success() {
            eprintln!("down failed: {}", text(&out));
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// How many answers came from each version.
pub fn versions(res: &[(u16, Option<EchoReply>)]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (code, r) in res {
        let v = match r {
            Some(r) => r.version.clone().unwrap_or_default(),
            None => format!("status {code}"),
        };
        *m.entry(v).or_insert(0) += 1;
    }
    m
}

/// Sum of a metric's samples whose labels contain every needle.
pub fn metric_sum(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Asserts that `got` of `n` weighted calls is within 5 standard deviations of
/// the binomial expectation (a false failure has probability below 1e-6).
pub fn assert_split(got: usize, n: usize, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let tol = 5.0 * sd;
    assert!(
        (got as f64 - mean).abs() <= tol,
        "{what}: {got} of {n}, expected {mean} ± {tol:.0} (5σ)"
    );
}

pub fn netns_left(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A CA and a serving certificate for `host`, as PEM (ca, cert, key).
pub fn certs(ca_name: &str, host: &str) -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// curl from the host (the ingress gateway is published on loopback): the
/// status, the echo app's reply when it answered, curl's stderr.
pub fn curl(args: &[&str]) -> (u16, Option<EchoReply>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n@@%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once("\n@@").unwrap_or(("", "0"));
    (
        code.parse().unwrap_or(0),
        serde_json::from_str(body).ok(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `host:port` where the ingress gateway's Service `port` is published.
pub fn ingress(mesh: &Local, port: &str) -> String {
    mesh.ok(&[
        "service-url",
        "istio-ingressgateway",
        "-n",
        "istio-system",
        "--port",
        port,
    ])
    .trim()
    .to_string()
}

/// The IP column of `meshctl local pods` for a pod name.
pub fn pod_ip(mesh: &Local, name: &str) -> String {
    let pods = mesh.ok(&["pods"]);
    pods.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or_else(|| panic!("no {name} in\n{pods}"))
        .to_string()
}
