//! Building blocks that each start or probe one thing in a pod (rules, app,
//! sidecar, readiness). Separate because the gateway variants reuse them too.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_api::{RedirectDefaults, RedirectParams};
use mesh_e2e::harness::{Node, Pod, PodProcess};

use super::variant::{Bins, APP_UID, PROXY_UID};
use crate::certs::write_readable;
use crate::ports::PORTS;

/// A world-readable folder for configs the sidecars (UID 1337) read.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// `mesh-bench-<node>-<name>` under the temp dir, mode 0755.
    pub(crate) fn for_deployment(node: &Node, name: &str) -> anyhow::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("mesh-bench-{}-{name}", node.id()));
        std::fs::create_dir_all(&dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the pod's redirect rules as istio-init would, with `annotations`.
pub(crate) fn redirect(
    pod: &Pod,
    cni: &Path,
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let flags = RedirectParams::for_pod(annotations, &RedirectDefaults::default())?.to_flags();
    let mut argv: Vec<&str> = vec![cni.to_str().context("cni path")?, "redirect"];
    argv.extend(flags.iter().map(String::as_str));
    let out = pod.exec(0, &argv)?;
    if !out.status.success() {
        bail!(
            "mesh-cni redirect in {}: {}",
            pod.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Polls `url` inside the pod until it answers 200 (bounded).
pub(crate) fn wait_http_ok(pod: &Pod, url: &str, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = pod.exec(
            0,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                url,
            ],
        )?;
        if out.stdout == b"200" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} in {} never answered 200 on {url}", pod.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fails with `what` unless a line of `url` (in `pod`) containing `needle` ends
/// in a positive number (a Prometheus sample or an Envoy `name: value` stat).
pub(crate) fn counted(pod: &Pod, url: &str, needle: &str, what: &str) -> anyhow::Result<()> {
    let out = pod.exec(0, &["curl", "-sS", "--max-time", "5", url])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let proven = text.lines().any(|l| {
        l.contains(needle)
            && l.rsplit([' ', ':'])
                .next()
                .and_then(|n| n.trim().parse::<f64>().ok())
                .is_some_and(|n| n > 0.0)
    });
    if !proven {
        bail!("{what} ({url}, lines with {needle:?}):\n{text:.2000}");
    }
    Ok(())
}

/// The app in `pod`: fixed 1 KB answers on the HTTP ports, TCP echo.
pub(crate) fn start_app(pod: &Pod, bins: &Bins) -> anyhow::Result<PodProcess> {
    let bench = bins.bench.to_str().context("bench path")?;
    let http_ports = format!("{},{}", PORTS.http, PORTS.h2);
    let tcp_port = PORTS.tcp.to_string();
    let mut app = pod.spawn(
        APP_UID,
        &[
            bench,
            "server",
            "--http-ports",
            &http_ports,
            "--tcp-port",
            &tcp_port,
            "--body",
            "1024",
        ],
    )?;
    app.wait_for_line("mesh-bench server listening", Duration::from_secs(10))?;
    Ok(app)
}

/// The real pids behind the two proxy processes (the pod harness starts them
/// through a wrapper).
pub(crate) fn resolve_pids(procs: Option<&(PodProcess, PodProcess)>) -> Option<(u32, u32)> {
    procs.map(|(c, s)| {
        (
            crate::procstat::resolve(c.pid()),
            crate::procstat::resolve(s.pid()),
        )
    })
}

pub(crate) fn start_mesh_proxy(
    pod: &Pod,
    bin: &Path,
    view: &Path,
    labels: &str,
    ca_token: Option<PathBuf>,
) -> anyhow::Result<PodProcess> {
    let ip = pod.ip().to_string();
    let mut argv: Vec<String> = [
        bin.to_str().context("proxy path")?,
        "--view-file",
        view.to_str().context("view path")?,
        "--pod",
        pod.name(),
        "--namespace",
        "default",
        "--service-account",
        pod.name(),
        "--labels",
        labels,
        "--instance-ip",
        &ip,
        "--concurrency",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(t) = ca_token {
        argv.extend([
            // The agent publishes its bundle next to the tokens (MeshCa::start).
            "--ca-root-file".to_string(),
            t.with_file_name("root-cert.pem").display().to_string(),
            "--ca-token-file".to_string(),
            t.display().to_string(),
            "--ca-addr".to_string(),
            format!("{}:15012", mesh_e2e::harness::GATEWAY),
        ]);
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut p = pod.spawn(PROXY_UID, &argv)?;
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(20))?;
    wait_http_ok(pod, "http://127.0.0.1:15021/healthz/ready", "mesh-proxy")?;
    Ok(p)
}

pub(crate) fn start_envoy_sidecar(
    pod: &Pod,
    bin: &Path,
    dir: &Path,
    upstream: Option<IpAddr>,
    tls: Option<&crate::certs::LeafFiles>,
) -> anyhow::Result<PodProcess> {
    start_envoy(
        pod,
        bin,
        dir,
        &crate::envoy::bootstrap(upstream, &PORTS, tls),
    )
}

/// Envoy in `pod` as UID 1337, one worker, with the bootstrap `cfg`; returns
/// once its admin says ready.
pub(crate) fn start_envoy(
    pod: &Pod,
    bin: &Path,
    dir: &Path,
    cfg: &serde_json::Value,
) -> anyhow::Result<PodProcess> {
    let path = dir.join(format!("envoy-{}.json", pod.name()));
    write_readable(&path, &serde_json::to_vec_pretty(cfg)?)?;
    let p = pod.spawn(
        PROXY_UID,
        &[
            bin.to_str().context("envoy path")?,
            "-c",
            path.to_str().context("config path")?,
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            &std::env::var("MESH_BENCH_ENVOY_LOG").unwrap_or_else(|_| "warning".into()),
        ],
    )?;
    wait_http_ok(pod, "http://127.0.0.1:15000/ready", "envoy")?;
    Ok(p)
}
