//! The `mesh-webhook` binary: a bad configuration exits non-zero before binding,
//! naming what to fix; a good one prints its bound address, serves HTTPS, and exits
//! cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::net::Client;
use common::TestCa;

const BIN: &str = env!("CARGO_BIN_EXE_mesh-webhook");

/// Kills the child if the test fails before it exits.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_with_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ca");
    let (cert, key) = ca.serving();
    let (c, k, m) = (
        dir.path().join("c.pem"),
        dir.path().join("k.pem"),
        dir.path().join("mesh.yaml"),
    );
    std::fs::write(&c, &cert).unwrap();
    std::fs::write(&k, &key).unwrap();
    let (c, k, m) = (
        c.to_str().unwrap(),
        k.to_str().unwrap(),
        m.to_str().unwrap(),
    );

    let (code, err) = run(&["--listen", "127.0.0.1:0"]);
    assert_ne!(code, 0);
    assert!(err.contains("--tls-cert"), "{err}");

    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/tls.crt",
        "--tls-key",
        k,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/tls.crt"), "{err}");

    let (code, err) = run(&["--listen", "127.0.0.1:0", "--tls-cert", k, "--tls-key", c]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TLS cert"), "{err}");

    // A bad mesh config stops the start with a message naming the bad value;
    // Istio fields we do not use are accepted, a typo inside our own block is not.
    for (mesh, names) in [
        (
            "trustDomain: 'Not A Domain'\n",
            ["trustDomain", "Not A Domain"],
        ),
        ("images: {proxyy: x}\n", ["unknown field", "proxyy"]),
    ] {
        std::fs::write(m, mesh).unwrap();
        let (code, err) = run(&[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            c,
            "--tls-key",
            k,
            "--mesh-config",
            m,
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(names.iter().all(|n| err.contains(n)), "{mesh}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ca");
    let (cert, key) = ca.serving();
    std::fs::write(dir.path().join("c.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("k.pem"), &key).unwrap();
    let mut child = Guard(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(dir.path().join("c.pem"))
            .arg("--tls-key")
            .arg(dir.path().join("k.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("reports its address")
        .parse()
        .unwrap();
    let mut c = Client::connect(addr, &ca.cert_pem).await.unwrap();
    assert_eq!(c.request("GET", "/readyz", None, vec![]).await.0, 200);

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}
