//! What runs in a pod: its redirect rules, the sidecar or gateway (UID 1337)
//! and the echo app (UID 1000), each started and waited for until ready, so
//! that a test's first request never races a process still starting.

use mesh_api::{RedirectDefaults, RedirectParams};
use mesh_e2e::bins::workspace_bin;
use mesh_e2e::harness::{Pod, PodProcess};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub const APP: u32 = 1000;
pub const PROXY: u32 = 1337;

/// Writes the pod's redirect rules exactly as istio-init would.
pub fn redirect(pod: &Pod) {
    let flags = RedirectParams::for_pod(&BTreeMap::new(), &RedirectDefaults::default())
        .unwrap()
        .to_flags();
    let cni = workspace_bin("mesh-cni");
    let mut argv: Vec<&str> = vec![cni.to_str().unwrap(), "redirect"];
    argv.extend(flags.iter().map(String::as_str));
    let out = pod.exec(0, &argv).unwrap();
    assert!(
        out.status.success(),
        "mesh-cni redirect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn start_proxy(pod: &Pod, view: &Path, labels: &str, extra: &[&str]) -> PodProcess {
    let mut config = vec!["--view-file", view.to_str().unwrap()];
    if !extra.contains(&"--drain-grace") {
        config.extend_from_slice(&["--drain-grace", "200ms"]);
    }
    config.extend_from_slice(extra);
    start_proxy_with(pod, labels, &config)
}

/// A sidecar (UID 1337) for `pod` in namespace `default` with `labels`,
/// configured by `config` (`--agent ADDR`, `--view-file FILE`, …); returns once
/// it is ready (config applied, and its certificate if it asked for one).
pub fn start_proxy_with(pod: &Pod, labels: &str, config: &[&str]) -> PodProcess {
    start_proxy_as(pod, pod.name(), labels, config)
}

/// Like [`start_proxy_with`], with the sidecar saying it is pod `name`.
pub fn start_proxy_as(pod: &Pod, name: &str, labels: &str, config: &[&str]) -> PodProcess {
    start_proxy_in(pod, name, "default", labels, config)
}

/// Like [`start_proxy_as`], with the sidecar in namespace `ns`.
pub fn start_proxy_in(
    pod: &Pod,
    name: &str,
    ns: &str,
    labels: &str,
    config: &[&str],
) -> PodProcess {
    let proxy = env!("CARGO_BIN_EXE_mesh-proxy");
    let ip = pod.ip().to_string();
    let mut argv = vec![
        SH,
        "-c",
        LOGS_TO_STDOUT,
        proxy,
        "--pod",
        name,
        "--namespace",
        ns,
        "--labels",
        labels,
        "--instance-ip",
        &ip,
    ];
    argv.extend_from_slice(config);
    let mut p = pod.spawn(PROXY, &argv).unwrap();
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(10))
        .unwrap();
    wait_ready(pod);
    p
}

/// A gateway (`mesh-proxy router`, UID 1337) in `pod`, fed the view file
/// `view`; returns once it is ready (its first view's listeners bound).
pub fn start_router(pod: &Pod, view: &Path, extra: &[&str]) -> PodProcess {
    let proxy = env!("CARGO_BIN_EXE_mesh-proxy");
    let mut argv = vec![
        SH,
        "-c",
        LOGS_TO_STDOUT,
        "env",
        // The listener changes are info lines; the tests wait for them.
        "PROXY_LOG=warn,mesh_proxy::gateway=info",
        proxy,
        "router",
        "--pod",
        pod.name(),
        "--namespace",
        pod.namespace(),
        "--view-file",
        view.to_str().unwrap(),
        "--drain-grace",
        "200ms",
    ];
    argv.extend_from_slice(extra);
    let mut p = pod.spawn(PROXY, &argv).unwrap();
    p.wait_for_line("mesh-proxy bound router", Duration::from_secs(10))
        .unwrap();
    wait_ready(pod);
    p
}

/// Agent and sidecars log to stderr; run them with stderr on stdout so tests
/// can wait for their log lines (`exec` keeps the process id).
pub(super) const SH: &str = "/bin/sh";
pub(super) const LOGS_TO_STDOUT: &str = "exec \"$0\" \"$@\" 2>&1";

pub fn wait_ready(pod: &Pod) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = pod
            .exec(
                0,
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "http://127.0.0.1:15021/healthz/ready",
                ],
            )
            .unwrap();
        if out.stdout == b"200" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxy in {} never became ready",
            pod.name()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn start_echo(pod: &Pod, version: &str) -> PodProcess {
    let echo = workspace_bin("mesh-echo");
    let labels = format!("app=echo,version={version}");
    let mut p = pod
        .spawn(
            APP,
            &[
                echo.to_str().unwrap(),
                "--port",
                "8080",
                "--tcp-port",
                "9000",
                "--pod",
                pod.name(),
                "--labels",
                &labels,
                "--log-requests",
            ],
        )
        .unwrap();
    p.wait_for_line("mesh-echo listening", Duration::from_secs(10))
        .unwrap();
    p
}
