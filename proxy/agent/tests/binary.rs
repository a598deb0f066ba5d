//! The `mesh-agent` binary: bad config exits non-zero naming what to fix, before
//! binding anything; `gen-crds` and `validate` subcommands work.

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_config_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--source", "files"],
            "--source files needs --config-dir <folder>",
        ),
        (
            &["--config-dir", "/nonexistent/mesh"],
            "--config-dir \"/nonexistent/mesh\" is not a readable folder",
        ),
        (
            &["--config-dir", d, "--outbound-policy", "DENY"],
            "--outbound-policy \"DENY\" must be ALLOW_ANY or REGISTRY_ONLY",
        ),
        (
            &["--config-dir", d, "--root-namespace", "Istio_System"],
            "--root-namespace \"Istio_System\" is not a valid namespace name",
        ),
        (
            &[
                "--config-dir",
                d,
                "--maistra-members",
                "--smcp-name",
                "Basic_Mesh",
            ],
            "--smcp-name \"Basic_Mesh\" is not a valid ServiceMeshControlPlane name",
        ),
        (
            &[
                "--config-dir",
                d,
                "--listen",
                "127.0.0.1:15999",
                "--debug-listen",
                "127.0.0.1:15999",
            ],
            "--listen and --debug-listen are both 127.0.0.1:15999",
        ),
        (
            &[
                "--config-dir",
                d,
                "--debug-listen",
                "127.0.0.1:15998",
                "--ready-listen",
                "127.0.0.1:15998",
            ],
            "--debug-listen and --ready-listen are both 127.0.0.1:15998",
        ),
    ];
    for (args, msg) in cases {
        let (code, _, err) = agent(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    let (code, _, err) = agent(&["--config-dir", d, "--listen", "not-an-address"]);
    assert_eq!(code, 2, "clap rejects it: {err}");
    assert!(err.contains("not-an-address"));
}

#[test]
fn validate_subcommand_prints_findings_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vs.yaml");
    std::fs::write(&f, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n  hosts: [r]\n  http:\n  - timeout: soon\n    route:\n    - destination: {host: r}\n").unwrap();
    let (code, out, err) = agent(&["validate", f.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("error: VirtualService/ns/r: spec.http[0].timeout: invalid number in duration \"soon\" (value \"soon\")"), "{out}");
    let bookinfo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/samples/bookinfo/networking/"
    );
    let (code, out, err) = agent(&[
        "validate",
        &format!("{bookinfo}destination-rule-all.yaml"),
        &format!("{bookinfo}virtual-service-reviews-80-20.yaml"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn gen_crds_writes_the_checked_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = agent(&["gen-crds", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // Every generated CRD is the checked-in one, and every checked-in CRD is generated.
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/crds");
    let mut checked_in: Vec<String> = std::fs::read_dir(crds)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    checked_in.sort();
    let mut generated: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    generated.sort();
    assert_eq!(generated, checked_in);
    assert_eq!(out.lines().count(), generated.len(), "{out}");
    for name in &generated {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            std::fs::read_to_string(format!("{crds}/{name}")).unwrap(),
            "{name} differs from manifests/crds: run `mesh-agent gen-crds --out manifests/crds`"
        );
    }
}
