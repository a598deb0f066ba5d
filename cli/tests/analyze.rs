//! `meshctl analyze` on recorded inputs (cli/tests/analyze/, Istio's Bookinfo): one
//! case per check, the exact findings (level, code, resource) and the exit code,
//! plus a golden file of the text output (refresh with UPDATE_GOLDEN=1).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/analyze")
}

fn bookinfo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/samples/bookinfo")
}

/// Runs `meshctl analyze` and returns (exit code, findings as (level, code, resource), stdout).
fn analyze(files: &[PathBuf], extra: &[&str]) -> (i32, BTreeSet<(String, String, String)>, String) {
    let json = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("analyze")
        .args(extra)
        .args(["-o", "json", "-f"])
        .args(files)
        .output()
        .expect("run meshctl");
    let stdout = String::from_utf8_lossy(&json.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&json.stderr)));
    let found = v
        .as_array()
        .expect("array")
        .iter()
        .map(|m| {
            assert!(
                !m["hint"].as_str().unwrap_or("").is_empty(),
                "every finding has a fix hint: {m}"
            );
            (
                m["level"].as_str().unwrap().to_string(),
                m["code"].as_str().unwrap().to_string(),
                m["resource"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (json.status.code().expect("exit code"), found, stdout)
}

fn with_base(case: &str) -> Vec<PathBuf> {
    vec![dir().join("base.yaml"), dir().join(case)]
}

fn set(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn clean_mesh_has_no_findings_and_exits_zero() {
    let (code, found, _) = analyze(&with_base("clean.yaml"), &[]);
    assert_eq!(found, set(&[]));
    assert_eq!(code, 0);
}

#[test]
fn each_check_reports_its_code_resource_and_exit_code() {
    type Findings = &'static [(&'static str, &'static str, &'static str)];
    let cases: &[(&str, Findings, i32)] = &[
        (
            "subset-missing.yaml",
            &[("Error", "IST0101", "VirtualService shop/reviews")],
            79,
        ),
        (
            "gateway-missing.yaml",
            &[("Error", "IST0101", "VirtualService shop/front")],
            79,
        ),
        (
            "host-missing.yaml",
            &[("Error", "IST0101", "VirtualService shop/ratings")],
            79,
        ),
        (
            "conflict.yaml",
            &[
                ("Error", "IST0109", "VirtualService shop/ratings-a"),
                ("Error", "IST0109", "VirtualService shop/ratings-b"),
            ],
            79,
        ),
        (
            "subset-no-pods.yaml",
            &[("Warning", "IST0173", "DestinationRule shop/ratings")],
            0,
        ),
        (
            "not-injected.yaml",
            &[("Info", "IST0102", "Namespace plain")],
            0,
        ),
        (
            "strict-no-sidecar.yaml",
            &[("Warning", "MESH0001", "Deployment shop/reviews-legacy")],
            0,
        ),
        (
            "port-name.yaml",
            &[("Info", "IST0118", "Service shop/legacy")],
            0,
        ),
        (
            "invalid.yaml",
            &[("Error", "IST0106", "VirtualService shop/broken")],
            79,
        ),
        (
            "gateway-no-pods.yaml",
            &[("Error", "IST0101", "Gateway shop/edge")],
            79,
        ),
        (
            "credential-missing.yaml",
            &[("Error", "IST0101", "Gateway shop/secure")],
            79,
        ),
        (
            "gateway-conflict.yaml",
            &[
                ("Error", "IST0145", "Gateway shop/alpha"),
                ("Error", "IST0145", "Gateway shop/beta"),
            ],
            79,
        ),
    ];
    for (case, want, want_code) in cases {
        let (code, found, out) = analyze(&with_base(case), &[]);
        assert_eq!(found, set(want), "{case}: {out}");
        assert_eq!(code, *want_code, "{case}");
    }
    // Warnings fail the run when asked to.
    let (code, _, _) = analyze(
        &with_base("subset-no-pods.yaml"),
        &["--failure-threshold", "warning"],
    );
    assert_eq!(code, 79);
}

#[test]
fn gateway_messages_use_istios_wording() {
    let (_, _, out) = analyze(&with_base("gateway-no-pods.yaml"), &[]);
    assert!(
        out.contains(r#"Referenced selector not found: \"istio=edgegateway\""#),
        "{out}"
    );
    // The Secret is looked up in the gateway pods' namespace (istio-system),
    // not the Gateway's: shop-cert is found there, other-cert only in shop is not.
    let (_, _, out) = analyze(&with_base("credential-missing.yaml"), &[]);
    assert!(
        out.contains(r#"Referenced credentialName not found: \"other-cert\""#)
            && !out.contains("\\\"shop-cert\\\""),
        "{out}"
    );
    let (_, _, out) = analyze(&with_base("gateway-conflict.yaml"), &[]);
    assert!(
        out.contains("Conflict with gateways shop/beta (workload selector istio=ingressgateway, port 8081, hosts foo.example.com).")
            && !out.contains("shop/gamma"),
        "{out}"
    );
    // Without the install's ingress gateway, the base's Gateway selects nothing.
    let (code, found, _) = analyze(&with_base("clean.yaml"), &["--installed-gateways", "none"]);
    assert_eq!(code, 79);
    assert_eq!(
        found,
        set(&[("Error", "IST0101", "Gateway shop/shop-gateway")])
    );
    // A gateway workload in the input is matched like the install's.
    let (code, found, out) = analyze(
        &[
            dir().join("base.yaml"),
            dir().join("clean.yaml"),
            dir().join("gateway-no-pods.yaml"),
            dir().join("edge-gateway-deployment.yaml"),
        ],
        &[],
    );
    assert_eq!((code, found), (0, set(&[])), "{out}");
}

#[test]
fn messages_name_the_bad_value() {
    let (_, _, out) = analyze(&with_base("subset-missing.yaml"), &[]);
    assert!(out.contains("reviews+v3"), "{out}");
    let (_, _, out) = analyze(&with_base("gateway-missing.yaml"), &[]);
    assert!(out.contains("other/edge"), "{out}");
    let (_, _, out) = analyze(&with_base("host-missing.yaml"), &[]);
    assert!(out.contains("ratingz"), "{out}");
    let (_, _, out) = analyze(&with_base("port-name.yaml"), &[]);
    assert!(
        out.contains("\\\"web\\\"")
            && !out.contains("http-admin")
            && !out.contains("\\\"metrics\\\""),
        "{out}"
    );
}

#[test]
fn bookinfo_with_its_rules_analyzes_clean_of_errors() {
    let b = bookinfo();
    let files = vec![
        b.join("platform/bookinfo.yaml"),
        b.join("platform/bookinfo-versions.yaml"),
        b.join("networking/bookinfo-gateway.yaml"),
        b.join("networking/destination-rule-all.yaml"),
        b.join("networking/virtual-service-all-v1.yaml"),
    ];
    let (code, found, out) = analyze(&files, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(found.iter().all(|f| f.0 != "Error"), "{out}");
    assert!(
        found.contains(&("Info".into(), "IST0102".into(), "Namespace default".into())),
        "{out}"
    );
    // destination-rule-all.yaml defines ratings subsets for deployments Bookinfo only ships separately.
    assert!(
        found.contains(&(
            "Warning".into(),
            "IST0173".into(),
            "DestinationRule default/ratings".into()
        )),
        "{out}"
    );
}

#[test]
fn bookinfo_route_to_a_subset_without_destination_rule_is_an_error() {
    let b = bookinfo();
    let files = vec![
        b.join("platform/bookinfo.yaml"),
        b.join("networking/virtual-service-reviews-v3.yaml"),
    ];
    let (code, found, out) = analyze(&files, &[]);
    assert_eq!(code, 79);
    assert!(
        found.contains(&(
            "Error".into(),
            "IST0101".into(),
            "VirtualService default/reviews".into()
        )),
        "{out}"
    );
    assert!(out.contains("reviews+v3"), "{out}");
}

#[test]
fn text_output_matches_golden() {
    let files: Vec<PathBuf> = [
        "base.yaml",
        "subset-missing.yaml",
        "gateway-missing.yaml",
        "port-name.yaml",
        "not-injected.yaml",
    ]
    .iter()
    .map(|f| dir().join(f))
    .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("analyze")
        .arg("-f")
        .args(&files)
        .current_dir(dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(79));
    let text = String::from_utf8(out.stdout).unwrap();
    let golden = dir().join("golden.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    assert_eq!(
        text,
        std::fs::read_to_string(&golden).expect("golden.txt (UPDATE_GOLDEN=1 writes it)")
    );
}

#[test]
fn the_same_resource_in_two_files_is_reported_with_both_files() {
    // Bookinfo's fault-injection file redefines DestinationRule details with v1 only.
    let b = bookinfo();
    let files = vec![
        b.join("platform/bookinfo.yaml"),
        b.join("networking/destination-rule-all.yaml"),
        b.join("networking/fault-injection-details-v1.yaml"),
    ];
    let (code, found, out) = analyze(&files, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        found.contains(&(
            "Warning".into(),
            "MESH0002".into(),
            "DestinationRule default/details".into()
        )),
        "{out}"
    );
    assert!(
        out.contains("destination-rule-all.yaml")
            && out.contains("fault-injection-details-v1.yaml"),
        "{out}"
    );
}

#[test]
fn bad_input_paths_fail_with_the_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["analyze", "-f", "/nonexistent/mesh.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mesh.yaml"));
}

#[test]
fn ossm_control_plane_fields_not_applied_are_info_and_bad_values_errors() {
    let (code, found, out) = analyze(&with_base("smcp.yaml"), &[]);
    assert_eq!(
        found,
        set(&[(
            "Info",
            "MESH0004",
            "ServiceMeshControlPlane istio-system/basic"
        )]),
        "{out}"
    );
    assert_eq!(code, 0, "info does not fail: {out}");
    for p in [
        "spec.gateways.openshiftRoute",
        "spec.addons.kiali",
        "spec.addons.grafana",
        "spec.runtime",
    ] {
        let n = out
            .matches(&format!("\"{p} is accepted but not applied by this mesh\""))
            .count();
        assert_eq!(n, 1, "one message for {p}: {out}");
    }
    assert!(
        !out.contains("spec.tracing") && !out.contains("spec.proxy"),
        "{out}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad-smcp.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(dir().join("smcp.yaml"))
            .unwrap()
            .replace("REGISTRY_ONLY", "SOMETIMES"),
    )
    .unwrap();
    let (code, found, out) = analyze(&[bad], &[]);
    assert!(
        found.contains(&(
            "Error".into(),
            "MESH0003".into(),
            "ServiceMeshControlPlane istio-system/basic".into()
        )),
        "{out}"
    );
    assert!(
        out.contains("trafficControl.outbound.policy") && out.contains("SOMETIMES"),
        "{out}"
    );
    assert_eq!(code, 79);
}

#[test]
fn gateway_api_objects_are_parsed_and_validated() {
    let (code, found, out) = analyze(&with_base("gateway-api.yaml"), &[]);
    assert_eq!(
        found,
        set(&[("Error", "IST0106", "HTTPRoute shop/bad")]),
        "{out}"
    );
    assert_eq!(code, 79);
    assert!(
        out.contains("spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch"),
        "{out}"
    );
    assert!(out.contains("status code 304"), "{out}");
}
