//! The sidecar build must not link the agent: `mesh-agent` brings the
//! Kubernetes client, the CA and a file watcher, most of a binary whose mapped
//! text every pod pays for. Only the `embedded-agent` feature (`--config-dir`)
//! may pull it in. Nor a protobuf/gRPC runtime: the OTLP span export writes
//! its one message by hand (src/trace/proto.rs); the OpenTelemetry crates are
//! the tests' decoder only. Reads `cargo tree` (no build) for the host
//! platform, the one the sidecar runs on: other platforms' crates (Windows
//! consoles, say) need not even be in the offline registry.

use std::collections::BTreeSet;
use std::process::Command;

/// The crates of `mesh-proxy`'s normal dependency graph with `features`.
fn normal_deps(features: &[&str]) -> BTreeSet<String> {
    deps("normal", features)
}

/// The crates of `mesh-proxy`'s dependency graph of `edges` kinds.
fn deps(edges: &str, features: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "tree",
        "--offline",
        "-p",
        "mesh-proxy",
        "-e",
        edges,
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let out = cmd.output().expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Crates only the agent needs.
const AGENT_ONLY: [&str; 4] = ["mesh-agent", "kube-client", "kube-runtime", "notify"];

#[test]
fn the_sidecar_build_does_not_link_the_agent() {
    let sidecar = normal_deps(&[]);
    assert!(
        sidecar.contains("mesh-api") && sidecar.contains("tokio"),
        "{sidecar:?}"
    );
    let linked: Vec<&str> = AGENT_ONLY
        .into_iter()
        .filter(|c| sidecar.contains(*c))
        .collect();
    assert!(
        linked.is_empty(),
        "the default mesh-proxy build links {linked:?}; keep mesh-agent behind the `embedded-agent` feature"
    );
    // The check sees the agent where it is meant to be.
    let standalone = normal_deps(&["embedded-agent"]);
    for c in ["mesh-agent", "kube-client", "notify"] {
        assert!(standalone.contains(c), "{c} missing from {standalone:?}");
    }
}

/// Crates of a protobuf/gRPC/OpenTelemetry runtime.
const PROTOBUF_RUNTIME: [&str; 5] = [
    "prost",
    "tonic",
    "opentelemetry",
    "opentelemetry-proto",
    "opentelemetry_sdk",
];

#[test]
fn the_sidecar_exports_otlp_without_a_protobuf_runtime() {
    let sidecar = normal_deps(&[]);
    let linked: Vec<&str> = PROTOBUF_RUNTIME
        .into_iter()
        .filter(|c| sidecar.contains(*c))
        .collect();
    assert!(
        linked.is_empty(),
        "the mesh-proxy build links {linked:?}; OTLP is encoded by src/trace/proto.rs"
    );
    // The check sees them where they are meant to be: the tests' decoder.
    let dev = deps("normal,dev", &[]);
    for c in ["prost", "opentelemetry-proto"] {
        assert!(dev.contains(c), "{c} missing from the dev graph {dev:?}");
    }
}
