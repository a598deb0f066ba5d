//! The README's main command: `meshctl demo` brings Bookinfo and the ingress
//! gateway up on a local mesh, calls from the host through the gateway's
//! published port (productpage, the reviews split, jason's routing), and
//! removes everything. Needs a working `mesh-proxy router`.

use std::process::Command;

#[test]
fn demo_shows_the_split_and_cleans_up() {
    let root = std::env::temp_dir().join(format!("meshctl-demo-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["demo", "--calls", "200", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |version: &str| -> usize {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("reviews {version} ")))
            .and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let (v1, v2) = (count("v1"), count("v2"));
    assert_eq!(v1 + v2, 200, "{stdout}");
    // 80/20 over 200 calls: 5 standard deviations is ±28.
    assert!((132..=188).contains(&v1), "v1 got {v1} of 200:\n{stdout}");
    assert!(stdout.contains("end-user: jason → v2: 20"), "{stdout}");
    assert!(
        stdout.contains("/productpage → 200, answered by productpage-v1-0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/no-such-page → 404 (no route)"),
        "{stdout}"
    );
    // Bookinfo's six pods and the ingress gateway.
    assert!(stdout.contains("removed 7 pods"), "{stdout}");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("ml-demo-"));
    assert!(!root.join("demo").exists());
    assert!(
        !root.join("demo-inputs").exists(),
        "the demo's input files were left behind"
    );
    let _ = std::fs::remove_dir_all(&root);
}
