//! `meshctl proxy-config` and `meshctl version` against real processes on
//! loopback: a `mesh-proxy` whose embedded agent reads a folder of Kubernetes +
//! Istio YAML (the same agent code as `mesh-agent`), a `mesh-agent` and a
//! `mesh-webhook` serving HTTPS. The tables must show what the proxy compiled:
//! service and subset clusters with their DestinationRule, VIP listeners, the
//! VirtualService's route matches, endpoints with health and outlier state; a
//! file edit shows up after the proxy applies it.

mod procs;

use std::path::Path;

use mesh_e2e::testca::TestCa;
use procs::*;

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

/// meshctl with no cluster: sidecars are addressed by their admin address.
fn ctl(args: &[&str]) -> (bool, String, String) {
    meshctl(Path::new(NO_CLUSTER), args)
}

/// Polls a proxy-config table until `f` accepts it (the embedded agent needs a
/// moment to read the folder and push the view).
fn until_shown(args: &[&str], f: impl Fn(&str) -> bool) -> String {
    until(Path::new(NO_CLUSTER), args, f)
}

/// The proxy under test: its embedded agent reads the YAML in `dir`.
fn start_proxy(dir: &Path) -> (Proc, String) {
    let (p, admin, _) = proxy(&["--config-dir", dir.to_str().unwrap()]);
    (p, admin)
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

    let clusters = until_shown(&["proxy-config", "cluster", &admin], |o| {
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

    let (ok, eps, err) = ctl(&["proxy-config", "endpoint", &admin, "--fqdn", fq]);
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

    let (ok, routes, err) = ctl(&["proxy-config", "routes", &admin]);
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

    let (ok, listeners, err) = ctl(&["proxy-config", "listener", &admin, "--port", "5432"]);
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

    let (ok, json, err) = ctl(&["proxy-config", "all", &admin, "-o", "json"]);
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
    until_shown(&["proxy-config", "cluster", &admin], |o| {
        !o.contains(" v2 ")
    });

    // Bad targets say what to do.
    let (ok, _, err) = ctl(&["proxy-config", "cluster", "reviews-v1-abc"]);
    assert!(
        !ok && err.contains("kubectl port-forward reviews-v1-abc 15000"),
        "{err}"
    );
    let (ok, _, err) = ctl(&["proxy-config", "cluster", "127.0.0.1:1"]);
    assert!(!ok && err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn version_reports_every_reachable_component() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let (_proxy, admin) = start_proxy(dir.path());
    let (_agent, _, agent) = agent(dir.path());
    // The webhook on a cert for its Service name from a test CA.
    let wh = webhook();
    let (webhook, webhook_ca) = (wh.addr.clone(), wh.ca.to_str().unwrap().to_string());

    let v = env!("CARGO_PKG_VERSION");
    let args = [
        "version",
        "--agent",
        &agent,
        "--webhook",
        &webhook,
        "--webhook-ca",
        &webhook_ca,
        "--proxy-admin",
        &admin,
        "--proxy-admin",
        "127.0.0.1:1",
    ];
    let (ok, out, err) = ctl(&args);
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
    let (ok, out, err) = ctl(&json_args);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["agents"][0]["version"], v);
    assert_eq!(j["webhooks"][0]["version"], v);
    assert_eq!(j["dataPlane"][0]["version"], v);
    assert!(j["dataPlane"][1]["error"].as_str().is_some());

    // A webhook that does not chain to the given CA is not believed.
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(other.path(), TestCa::new("other CA", None).pem).unwrap();
    let (_, out, err) = ctl(&[
        "version",
        "--webhook",
        &webhook,
        "--webhook-ca",
        other.path().to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(out.contains("\"error\""), "{out}{err}");

    assert_eq!(ctl(&["version", "--short"]).1.trim(), v);
}
