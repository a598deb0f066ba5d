//! `meshctl proxy-config` and `meshctl version` against real processes on
//! loopback: a `mesh-proxy` whose embedded agent reads a folder of Kubernetes +
//! Istio YAML (the same agent code as `mesh-agent`), a `mesh-agent` and a
//! `mesh-webhook` serving HTTPS. The tables must show what the proxy compiled:
//! service and subset clusters with their DestinationRule, VIP listeners, the
//! VirtualService's route matches, endpoints with health and outlier state; a
//! file edit shows up after the proxy applies it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_e2e::bins::workspace_bin;

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  selector: {app: db}
  ports:
  - {name: tcp-db, port: 5432}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: shop, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: reviews}]}
status: {podIP: 10.1.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: shop, labels: {app: reviews, version: v2}}
spec: {containers: [{name: app, image: reviews}]}
status: {podIP: 10.1.0.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec: {containers: [{name: app, image: db}]}
status: {podIP: 10.1.0.9, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    route:
    - {destination: {host: reviews, subset: v2}, weight: 80}
    - {destination: {host: reviews, subset: v1}, weight: 20}
  - route:
    - destination: {host: reviews, subset: v1}
"#;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a binary and returns it with its first stdout line.
fn spawn(cmd: &mut Command) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(child), line)
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

fn meshctl(args: &[&str]) -> (bool, String, String) {
    // No cluster: a bare pod name must not reach whatever kubeconfig this machine has.
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn start_proxy(dir: &Path) -> (Proc, String) {
    let (p, line) = spawn(
        Command::new(workspace_bin("mesh-proxy"))
            .args([
                "--bind",
                "127.0.0.1",
                "--pod",
                "web-0",
                "--namespace",
                "shop",
            ])
            .args([
                "--outbound-port",
                "0",
                "--inbound-port",
                "0",
                "--admin-port",
                "0",
            ])
            .args([
                "--health-port",
                "0",
                "--prometheus-port",
                "0",
                "--status-port",
                "0",
            ])
            .arg("--config-dir")
            .arg(dir),
    );
    (p, field(&line, "admin=").to_string())
}

/// Polls the proxy-config table until `f` accepts it (the embedded agent needs a
/// moment to read the folder and push the view).
fn until(args: &[&str], f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out, err) = meshctl(args);
        if ok && f(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "meshctl {args:?} never matched; last: {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

#[test]
fn proxy_config_tables_show_what_the_proxy_compiled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let (_proxy, admin) = start_proxy(dir.path());

    let clusters = until(&["proxy-config", "cluster", &admin], |o| {
        o.contains("|v2|") || o.contains(" v2 ")
    });
    let rows = cells(&clusters);
    assert_eq!(
        rows[0],
        [
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "DESTINATION RULE"
        ]
    );
    let fq = "reviews.shop.svc.cluster.local";
    for want in [
        vec![fq, "9080", "-", "outbound", "EDS", fq],
        vec![fq, "9080", "v1", "outbound", "EDS", fq],
        vec![fq, "9080", "v2", "outbound", "EDS", fq],
        vec![
            "db.shop.svc.cluster.local",
            "5432",
            "-",
            "outbound",
            "EDS",
            "-",
        ],
        vec!["BlackHoleCluster", "-", "-", "-", "STATIC", "-"],
        vec!["PassthroughCluster", "-", "-", "-", "ORIGINAL_DST", "-"],
    ] {
        assert!(
            rows.contains(&want.iter().map(|s| s.to_string()).collect()),
            "{want:?} in\n{clusters}"
        );
    }

    let (ok, eps, err) = meshctl(&["proxy-config", "endpoint", &admin, "--fqdn", fq]);
    assert!(ok, "{err}");
    let rows = cells(&eps);
    assert_eq!(rows[0], ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]);
    for want in [
        [
            "10.1.0.1:9080",
            "HEALTHY",
            "OK",
            "outbound|9080||reviews.shop.svc.cluster.local",
        ],
        [
            "10.1.0.2:9080",
            "HEALTHY",
            "OK",
            "outbound|9080|v2|reviews.shop.svc.cluster.local",
        ],
        [
            "10.1.0.1:9080",
            "HEALTHY",
            "OK",
            "outbound|9080|v1|reviews.shop.svc.cluster.local",
        ],
    ] {
        assert!(
            rows.contains(&want.map(String::from).to_vec()),
            "{want:?} in\n{eps}"
        );
    }
    assert!(!eps.contains("10.1.0.9"), "--fqdn filters: {eps}");

    let (ok, routes, err) = meshctl(&["proxy-config", "routes", &admin]);
    assert!(ok, "{err}");
    let rows = cells(&routes);
    assert_eq!(
        rows[0],
        ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
    );
    assert_eq!(
        rows[1..],
        [
            [
                "9080",
                "reviews.shop.svc.cluster.local:9080",
                "reviews.shop.svc.cluster.local, reviews.shop",
                "/api*",
                "reviews.shop"
            ],
            [
                "9080",
                "reviews.shop.svc.cluster.local:9080",
                "reviews.shop.svc.cluster.local, reviews.shop",
                "/*",
                "reviews.shop"
            ],
        ]
        .map(|r| r.map(String::from).to_vec())
    );

    let (ok, listeners, err) = meshctl(&["proxy-config", "listener", &admin, "--port", "5432"]);
    assert!(ok, "{err}");
    assert_eq!(
        cells(&listeners)[1..],
        [[
            "10.96.0.30",
            "5432",
            "ALL",
            "Cluster: outbound|5432||db.shop.svc.cluster.local"
        ]
        .map(String::from)
        .to_vec()]
    );

    let (ok, json, err) = meshctl(&["proxy-config", "all", &admin, "-o", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let v2 = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["subset"] == "v2")
        .unwrap();
    assert_eq!(v2["outlierDetection"], true);
    assert_eq!(v2["lbPolicy"], "LEAST_REQUEST");

    // An edit (v2 subset dropped) shows up once the proxy has it.
    std::fs::write(
        dir.path().join("mesh.yaml"),
        MESH.replace("  - {name: v2, labels: {version: v2}}\n", "")
            .replace("subset: v2}, weight: 80", "subset: v1}, weight: 80"),
    )
    .unwrap();
    until(&["proxy-config", "cluster", &admin], |o| {
        !o.contains(" v2 ")
    });

    // Bad targets say what to do.
    let (ok, _, err) = meshctl(&["proxy-config", "cluster", "reviews-v1-abc"]);
    assert!(
        !ok && err.contains("kubectl port-forward reviews-v1-abc 15000"),
        "{err}"
    );
    let (ok, _, err) = meshctl(&["proxy-config", "cluster", "127.0.0.1:1"]);
    assert!(!ok && err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn version_reports_every_reachable_component() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let (_proxy, admin) = start_proxy(dir.path());
    let (_agent, line) = spawn(
        Command::new(workspace_bin("mesh-agent"))
            .args(["--config-dir", dir.path().to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"]),
    );
    let agent = field(&line, "debug=").to_string();

    // The webhook on a cert for its Service name from a test CA.
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = rcgen::CertificateParams::new(vec!["mesh-webhook.istio-system.svc".into()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let tls = tempfile::tempdir().unwrap();
    let p = |n: &str| tls.path().join(n).to_str().unwrap().to_string();
    std::fs::write(p("tls.crt"), cert.pem()).unwrap();
    std::fs::write(p("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(p("ca.crt"), ca_cert.pem()).unwrap();
    let (_webhook, line) = spawn(Command::new(workspace_bin("mesh-webhook")).args([
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &p("tls.crt"),
        "--tls-key",
        &p("tls.key"),
    ]));
    // "listening on ADDR"
    let webhook = line.trim().rsplit(' ').next().unwrap().to_string();

    let v = env!("CARGO_PKG_VERSION");
    let args = [
        "version",
        "--agent",
        &agent,
        "--webhook",
        &webhook,
        "--webhook-ca",
        &p("ca.crt"),
        "--proxy-admin",
        &admin,
        "--proxy-admin",
        "127.0.0.1:1",
    ];
    let (ok, out, err) = meshctl(&args);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "client version: {v}\ncontrol plane version: {v}\ndata plane version: {v} (1 proxy)\n"
        )
    );
    assert!(err.contains("127.0.0.1:1 unreachable"), "{err}");

    let mut json_args = args.to_vec();
    json_args.extend(["-o", "json"]);
    let (ok, out, err) = meshctl(&json_args);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["agents"][0]["version"], v);
    assert_eq!(j["webhooks"][0]["version"], v);
    assert_eq!(j["dataPlane"][0]["version"], v);
    assert!(j["dataPlane"][1]["error"].as_str().is_some());

    // A webhook that does not chain to the given CA is not believed.
    let other = tempfile::NamedTempFile::new().unwrap();
    let mut o = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    o.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(
        other.path(),
        o.self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem(),
    )
    .unwrap();
    let (_, out, err) = meshctl(&[
        "version",
        "--webhook",
        &webhook,
        "--webhook-ca",
        other.path().to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(out.contains("\"error\""), "{out}{err}");

    assert_eq!(meshctl(&["version", "--short"]).1.trim(), v);
}
