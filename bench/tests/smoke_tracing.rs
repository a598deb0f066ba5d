//! Smoke test of the tracing variants: `mesh-bench --smoke` on the headline
//! scenario with mesh-proxy tracing off, at 1 % and at 100 % sampling (spans
//! to the bench's Zipkin sink), then checks that the sink counted the spans
//! each sampling rate implies, that none were dropped, and that the report
//! has the tracing cost table. Needs root and the workspace's binaries
//! (`cargo build --workspace --bins`); no Envoy.

use std::process::Command;

#[test]
fn tracing_variants_send_the_spans_their_sampling_implies() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the benchmark smoke test needs root (it creates network namespaces)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args([
            "--smoke",
            "--variants",
            "direct,mesh-proxy,mesh-proxy-tracing-1,mesh-proxy-tracing-100",
            "--scenarios",
            "http1-1kb-1000rps",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("run mesh-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mesh-bench failed:\n{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    let runs = doc["runs"].as_array().expect("runs");
    let run = |v: &str| {
        runs.iter()
            .find(|r| r["variant"] == v)
            .unwrap_or_else(|| panic!("no run on {v}: {stderr}"))
    };
    for v in [
        "mesh-proxy",
        "mesh-proxy-tracing-1",
        "mesh-proxy-tracing-100",
    ] {
        let load = &run(v)["load"];
        assert!(load["ok"].as_u64().unwrap() >= 100, "{v}: {load}");
        assert_eq!(load["errors"], 0, "{v}: {load}");
    }
    assert!(
        run("mesh-proxy").get("spans").is_none(),
        "tracing off: no sink"
    );
    let spans = |v: &str| run(v)["spans"].clone();
    // Every request traced: a CLIENT and a SERVER span each (the window's
    // edges blur it by the requests in flight).
    let all = spans("mesh-proxy-tracing-100");
    let per_1000 = all["per_1000"].as_f64().unwrap();
    assert!((1800.0..=2200.0).contains(&per_1000), "100 %: {all}");
    assert_eq!(all["dropped"], 0, "100 %: {all}");
    // 1 %: about 20 per 1000 requests; a few hundred requests give a handful.
    let one = spans("mesh-proxy-tracing-1");
    assert!(one["per_1000"].as_f64().unwrap() < 200.0, "1 %: {one}");
    assert_eq!(one["dropped"], 0, "1 %: {one}");
    let md = std::fs::read_to_string(dir.path().join("results.md")).expect("results.md");
    assert!(
        md.contains("## Tracing cost: http1-1kb-1000rps") && md.contains("| 100 % |"),
        "{md}"
    );
}
