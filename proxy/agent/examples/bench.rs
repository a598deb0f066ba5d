//! Benchmark, run by hand (not a test):
//!
//! ```text
//! ulimit -n 65536
//! cargo run --release -p mesh-agent --example bench            # compile + views
//! cargo run --release -p mesh-agent --example bench -- --push  # + agent process, 1,000 proxies
//! ```
//!
//! Mesh: 1,000 services in 20 namespaces, 10,000 endpoints (EndpointSlices),
//! 500 VirtualServices with 500 DestinationRules. Reports full rebuild, one-endpoint
//! change, per-proxy view, agent RSS and the time for one change to reach (and be
//! ACKed by) 1,000 connected proxies.

use mesh_agent::compile::{compile, compile_cached, CompileCache, Settings};
use mesh_agent::objects::parse_yaml;
use mesh_agent::store::{SourceEvent, Store};
use mesh_api::syncapi::ProxyIdentity;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVICES: usize = 1000;
const NAMESPACES: usize = 20;
const ENDPOINTS_PER_SERVICE: usize = 10;
const VIRTUAL_SERVICES: usize = 500;

fn service_yaml(i: usize, first_ip: usize) -> String {
    let ns = format!("ns-{}", i % NAMESPACES);
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  clusterIP: 10.96.{}.{}\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: grpc-api, port: 9090}}]\n---\n",
        i / 250,
        i % 250
    );
    write!(y, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: grpc-api, port: 9090}}]\nendpoints:\n").unwrap();
    for e in 0..ENDPOINTS_PER_SERVICE {
        let ip = first_ip + e;
        writeln!(
            y,
            "- addresses: [10.{}.{}.{}]\n  conditions: {{ready: true}}\n  zone: zone-{}",
            1 + ip / 65536,
            (ip / 256) % 256,
            ip % 256,
            e % 3
        )
        .unwrap();
    }
    if i < VIRTUAL_SERVICES {
        write!(y, "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  hosts: [svc-{i}]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}, {{uri: {{regex: \"/api/v[0-9]+/.*\"}}}}]\n    route: [{{destination: {{host: svc-{i}, subset: v2}}}}]\n  - route:\n    - {{destination: {{host: svc-{i}, subset: v1}}, weight: 90}}\n    - {{destination: {{host: svc-{i}, subset: v2}}, weight: 10}}\n    timeout: 3s\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  host: svc-{i}\n  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n").unwrap();
    }
    y
}

fn event(origin: String, text: &str) -> SourceEvent {
    let (objs, errs) = parse_yaml(text);
    assert!(errs.is_empty(), "{errs:?}");
    SourceEvent::Replace {
        origin,
        objects: objs.into_iter().map(|(_, o)| o).collect(),
        errors: vec![],
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() {
    let files: Vec<(String, String)> = (0..SERVICES)
        .map(|i| {
            (
                format!("svc-{i}.yaml"),
                service_yaml(i, i * ENDPOINTS_PER_SERVICE),
            )
        })
        .collect();
    let mut store = Store::default();
    let t = Instant::now();
    for (name, text) in &files {
        store.apply(event(name.clone(), text));
    }
    println!(
        "ingest (parse + validate) of {SERVICES} files: {:?}",
        t.elapsed()
    );
    let settings = Arc::new(Settings::default());
    let runs: Vec<Duration> = (0..7)
        .map(|v| {
            let t = Instant::now();
            let s = compile(&store, &settings, v);
            assert_eq!(s.services.len(), SERVICES);
            assert!(s.rejected.is_empty(), "{:?}", &s.rejected[..1]);
            t.elapsed()
        })
        .collect();
    println!(
        "full rebuild: median {:?} (min {:?})",
        median(runs.clone()),
        runs.iter().min().unwrap()
    );
    let eps: usize = compile(&store, &settings, 1)
        .services
        .values()
        .map(|s| s.endpoints.len())
        .sum();
    assert_eq!(eps, SERVICES * ENDPOINTS_PER_SERVICE);
    // One endpoint changes: the file's objects applied to the store + recompile
    // (as the pipeline does it, with the compile cache); YAML parsing is timed apart.
    let mut cache = CompileCache::default();
    compile_cached(&store, &settings, 99, &mut cache);
    let mut parse = Vec::new();
    let runs: Vec<Duration> = (0..7)
        .map(|k| {
            let changed = service_yaml(7, 7 * ENDPOINTS_PER_SERVICE)
                .replace("10.1.0.70]", &format!("10.250.0.{k}]"));
            let t = Instant::now();
            let ev = event("svc-7.yaml".into(), &changed);
            parse.push(t.elapsed());
            let t = Instant::now();
            store.apply(ev);
            let s = compile_cached(&store, &settings, 100 + k as u64, &mut cache);
            let d = t.elapsed();
            assert!(s.services["svc-7.ns-7.svc.cluster.local"]
                .endpoints
                .iter()
                .any(|e| e.address == format!("10.250.0.{k}")));
            d
        })
        .collect();
    println!(
        "one-endpoint change (apply + cached rebuild): median {:?} (+ parsing the file: {:?})",
        median(runs),
        median(parse)
    );
    let snap = compile(&store, &settings, 200);
    let id = ProxyIdentity {
        pod: "p".into(),
        namespace: "ns-3".into(),
        ..Default::default()
    };
    let runs: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let v = mesh_agent::view::build(&snap, &id);
            assert!(!v.services.is_empty());
            t.elapsed()
        })
        .collect();
    let view = mesh_agent::view::build(&snap, &id);
    println!(
        "per-proxy view (namespace scope: {} services, {} bytes JSON): median {:?}",
        view.services.len(),
        serde_json::to_vec(&view).unwrap().len(),
        median(runs)
    );
    let mesh = Arc::new(Settings {
        visibility: mesh_agent::compile::Visibility::Mesh,
        ..Settings::default()
    });
    let snap_mesh = compile(&store, &mesh, 201);
    let runs: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            mesh_agent::view::build(&snap_mesh, &id);
            t.elapsed()
        })
        .collect();
    let big = mesh_agent::view::build(&snap_mesh, &id);
    println!(
        "per-proxy view (mesh scope: {} services, {} bytes JSON): median {:?}",
        big.services.len(),
        serde_json::to_vec(&big).unwrap().len(),
        median(runs)
    );
    println!(
        "bench process RSS with store + snapshots: {:.1} MiB",
        rss_mib(std::process::id())
    );
    if std::env::args().any(|a| a == "--push") {
        push(&files);
    }
}

/// Runs the real agent binary on the generated folder, connects 1,000 proxies and
/// measures one change from file write to every proxy having ACKed it.
fn push(files: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    for (n, t) in files {
        std::fs::write(dir.path().join(n), t).unwrap();
    }
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("mesh-agent");
    assert!(
        exe.exists(),
        "build the binary first: cargo build --release -p mesh-agent"
    );
    let mut child = std::process::Command::new(&exe)
        .args([
            "--config-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--debug-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let sync: String = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sync="))
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let states: Vec<_> = (0..1000)
            .map(|i| {
                let id = ProxyIdentity { pod: format!("p-{i}"), namespace: format!("ns-{}", i % NAMESPACES), ..Default::default() };
                mesh_agent::client::spawn(mesh_agent::client::ClientConfig::new(sync.clone(), id), |_: &mesh_api::syncapi::ProxyView| Ok(()), shutdown.clone())
            })
            .collect();
        let t = Instant::now();
        while !states.iter().all(|s| s.borrow().current.is_some()) {
            assert!(t.elapsed() < Duration::from_secs(60), "proxies did not all sync");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("1000 proxies connected and synced in {:?}", t.elapsed());
        let v0 = states[0].borrow().current.as_ref().unwrap().version;
        let rss = rss_mib(child.id());
        // One change every proxy sees: a Service in the root namespace.
        let t = Instant::now();
        std::fs::write(dir.path().join("zz.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: new, namespace: istio-system}\nspec: {ports: [{name: http, port: 80}]}\n").unwrap();
        while !states.iter().all(|s| s.borrow().current.as_ref().is_some_and(|v| v.version > v0)) {
            assert!(t.elapsed() < Duration::from_secs(30), "change did not reach everyone");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        println!("one change pushed to 1000 proxies (file write -> all applied, incl. 2x100 ms debounce): {:?}", t.elapsed());
        println!("agent RSS with 1000 proxies connected: {rss:.1} MiB (after push: {:.1} MiB)", rss_mib(child.id()));
        shutdown.cancel();
    });
    let _ = child.kill();
    let _ = child.wait();
}
