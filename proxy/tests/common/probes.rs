//! Asking running pods: curl from a pod's app, the proxy's metrics and admin
//! pages, the echo app's counters, bounded polling, and the Python scripts some
//! tests drive traffic with. Kept apart from `pods`: none of these starts a
//! process.

use super::pods::APP;
use super::view::ViewDir;
use mesh_e2e::echo::EchoReply;
use mesh_e2e::harness::Pod;
use std::time::{Duration, Instant};

/// The tools venv's Python (tests/install-deps.sh puts `h2` and `grpcio` there).
pub fn python() -> String {
    let venv = std::env::var("MESH_TOOLS_VENV").unwrap_or_else(|_| "/opt/mesh-tools".into());
    format!("{venv}/bin/python")
}

/// Copies a script of proxy/tests next to the view file, where the app user
/// (UID 1000) can read it; returns its path.
pub fn stage_script(dir: &ViewDir, name: &str) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    let dst = dir.0.join(name);
    std::fs::copy(&src, &dst).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
    dst.to_str().unwrap().to_string()
}

pub fn curl(pod: &Pod, args: &[&str]) -> std::process::Output {
    let mut argv = vec!["curl", "-sS", "--max-time", "5"];
    argv.extend_from_slice(args);
    pod.exec(APP, &argv).unwrap()
}

/// The HTTP status code of one curl from the app of `pod` (`000`: no answer).
pub fn http_code(pod: &Pod, args: &[&str]) -> String {
    let mut argv = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    argv.extend_from_slice(args);
    String::from_utf8_lossy(&curl(pod, &argv).stdout).into_owned()
}

pub fn curl_echo(pod: &Pod, args: &[&str]) -> EchoReply {
    let out = curl(pod, args);
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn metrics(pod: &Pod) -> String {
    let out = pod
        .exec(
            0,
            &["curl", "-s", "http://127.0.0.1:15090/stats/prometheus"],
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sum of a metric's samples whose label set contains every `needle`.
pub fn metric_sum(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `f` every 25 ms until it gives a value (at most `secs` seconds).
pub fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The proxy admin's (port 15000) answer at `path`, fetched inside `pod`.
pub fn admin(pod: &Pod, path: &str) -> String {
    let url = format!("http://127.0.0.1:15000{path}");
    let out = pod.exec(0, &["curl", "-s", &url]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The echo app's `/__echo/stats` in `pod` (requests seen, most in flight at once).
pub fn echo_stats(pod: &Pod) -> serde_json::Value {
    let out = pod
        .exec(0, &["curl", "-s", "http://127.0.0.1:8080/__echo/stats"])
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}
