//! Admission benchmark, run by hand: `cargo bench -p mesh-webhook --bench admission`.
//!
//! Starts the real `mesh-webhook` binary (release) with a fresh CA-signed cert,
//! then over HTTPS keep-alive: (1) an open-loop run at a fixed 200 reviews/s for
//! 10 s, latency measured from each request's scheduled send time (so a stall is
//! not hidden), reporting p50/p99/max; (2) a closed-loop run on 2 connections for
//! 3 s reporting admissions/s; the server's RSS (VmRSS and peak VmHWM); and the
//! in-process cost of `admission::review` alone, to tell CPU from transport.
//! Targets from the issue: p99 <= 2 ms at 200/s, RSS <= 20 MiB.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::net::Client;
use common::{review_for, TestCa};
use serde_json::json;

fn pod() -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "reviews-v1-5d8f7c-", "namespace": "bookinfo",
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "5d8f7c"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-5d8f7c",
                "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]},
        "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [
            {"name": "reviews", "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
             "ports": [{"containerPort": 9080, "name": "http"}],
             "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
             "readinessProbe": {"httpGet": {"path": "/ready", "port": 9080}},
             "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
            "volumes": [{"name": "tmp", "emptyDir": {}}]}})
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ca = TestCa::new("bench-ca");
    let (cert, key) = ca.serving();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_mesh-webhook"))
            .args(["--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mesh-webhook"),
    );
    let pid = child.0.id();
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("listening on ")
        .parse()
        .expect("bound address");
    let body = review_for(&pod(), "bench", "admission.k8s.io/v1");
    let bytes = serde_json::to_vec(&body).unwrap();
    println!(
        "review body {} bytes; server pid {pid}, RSS at start {} KiB",
        bytes.len(),
        rss_kib(pid, "VmRSS:")
    );

    let mut c = Client::connect(addr, &ca.cert_pem).await.unwrap();
    for _ in 0..200 {
        let (s, _) = c
            .request("POST", "/inject", Some("application/json"), bytes.clone())
            .await;
        assert_eq!(s, 200);
    }

    // Open loop, 200/s for 10 s.
    let rate = 200u32;
    let total = rate * 10;
    let period = Duration::from_secs(1) / rate;
    let start = tokio::time::Instant::now();
    let mut lat = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + period * i;
        tokio::time::sleep_until(due).await;
        let (s, resp) = c
            .request("POST", "/inject", Some("application/json"), bytes.clone())
            .await;
        assert!(s == 200 && resp.len() > 1000, "status {s}");
        lat.push(due.elapsed());
    }
    let wall = start.elapsed();
    lat.sort();
    println!(
        "open loop {rate}/s: {} reviews in {:.2}s ({:.0}/s): p50 {:?} p99 {:?} max {:?}",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );

    // Closed loop, 2 connections, 3 s: capacity.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (pem, bytes) = (ca.cert_pem.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr, &pem).await.unwrap();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (s, _) = c
                    .request("POST", "/inject", Some("application/json"), bytes.clone())
                    .await;
                assert_eq!(s, 200);
                n += 1;
            }
            n
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    println!(
        "closed loop, 2 connections: {:.0} admissions/s",
        n as f64 / 3.0
    );
    // The same review in-process: the CPU cost of the pure core alone.
    let mesh = mesh_webhook::MeshConfig::default();
    let ctx = mesh_webhook::InjectContext::default();
    let mut cpu = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        let r = mesh_webhook::admission::review(&bytes, &mesh, &ctx);
        cpu.push(t.elapsed());
        assert!(r.patch_ops > 0);
    }
    cpu.sort();
    println!(
        "in-process review(): p50 {:?} p99 {:?}",
        pct(&cpu, 0.5),
        pct(&cpu, 0.99)
    );
    println!(
        "server RSS now {} KiB, peak (VmHWM) {} KiB",
        rss_kib(pid, "VmRSS:"),
        rss_kib(pid, "VmHWM:")
    );
}
