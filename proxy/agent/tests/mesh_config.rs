//! `mesh-agent --mesh-config FILE` as a process: an Istio MeshConfig with fields we
//! do not use starts fine and its outbound policy reaches a subscribed proxy; an
//! edit takes effect live; a bad edit is rejected (logged) and the last good
//! config stays; a bad file at start exits non-zero naming the field and value.

use mesh_agent::client::{self, ClientConfig, ClientState};
use mesh_api::syncapi::ProxyIdentity;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const MESH: &str = include_str!("fixtures/mesh.yaml");

struct Agent {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn istio_mesh(mode: &str) -> String {
    format!(
        "# as pasted from an Istio install\naccessLogFile: /dev/stdout\nenableAutoMtls: true\n\
         enablePrometheusMerge: true\ndefaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n  \
         tracing: {{zipkin: {{address: zipkin:9411}}}}\n  drainDuration: 30s\n\
         outboundTrafficPolicy: {{mode: {mode}}}\nrootNamespace: istio-system\ntrustDomain: cluster.local\n"
    )
}

fn start(dir: &std::path::Path, mesh: &std::path::Path) -> (Agent, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
        .args(["--config-dir", dir.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"])
        .args([
            "--mesh-config",
            mesh.to_str().unwrap(),
            "--mesh-reload-ms",
            "50",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (err_pipe, buf) = (child.stderr.take().unwrap(), stderr.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            buf.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let agent = Agent { child, stderr };
    let sync = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sync="))
        .unwrap_or_else(|| {
            panic!(
                "no sync address in {line:?}: {}",
                agent.stderr.lock().unwrap()
            )
        })
        .to_string();
    (agent, sync)
}

fn policy(s: &watch::Receiver<ClientState>) -> Option<String> {
    s.borrow()
        .current
        .as_ref()
        .map(|v| v.outbound_traffic_policy.clone())
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_config_file_applies_live_and_a_bad_edit_keeps_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("objects.yaml"), MESH).unwrap();
    let meshdir = tempfile::tempdir().unwrap();
    let mesh = meshdir.path().join("mesh");
    std::fs::write(&mesh, istio_mesh("REGISTRY_ONLY")).unwrap();
    let (agent, sync) = start(dir.path(), &mesh);

    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let id = ProxyIdentity {
        pod: "web-0".into(),
        namespace: "shop".into(),
        service_account: "default".into(),
        labels: [("app".to_string(), "web".to_string())].into(),
        ips: vec!["10.200.0.1".into()],
        router: false,
    };
    let state = client::spawn(
        ClientConfig::new(sync, id),
        |_: &mesh_api::syncapi::ProxyView| Ok(()),
        shutdown.clone(),
    );
    // The flag default is ALLOW_ANY: the file's value wins.
    until("first view with the file's policy", || {
        policy(&state).as_deref() == Some("REGISTRY_ONLY")
    })
    .await;
    assert!(agent
        .stderr
        .lock()
        .unwrap()
        .contains("enablePrometheusMerge"));

    // A good edit takes effect without a restart.
    std::fs::write(&mesh, istio_mesh("ALLOW_ANY")).unwrap();
    until("edited policy", || {
        policy(&state).as_deref() == Some("ALLOW_ANY")
    })
    .await;

    // A bad edit is rejected with the field and value; the last good stays.
    std::fs::write(
        &mesh,
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\ntrustDomain: 42\nrootNamespace: [x]\n",
    )
    .unwrap();
    let err = agent.stderr.clone();
    until("rejection logged", || {
        err.lock().unwrap().contains("keeping the last good config")
    })
    .await;
    assert!(
        err.lock().unwrap().contains("rootNamespace"),
        "{}",
        err.lock().unwrap()
    );
    assert_eq!(policy(&state).as_deref(), Some("ALLOW_ANY"));

    // And the next good edit applies again.
    std::fs::write(&mesh, istio_mesh("REGISTRY_ONLY")).unwrap();
    until("policy after recovery", || {
        policy(&state).as_deref() == Some("REGISTRY_ONLY")
    })
    .await;
    drop(agent);
}

#[test]
fn bad_mesh_config_at_start_exits_naming_field_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh");
    for (text, want) in [
        ("outboundTrafficPolicy: {mode: SOMETIMES}\n", "SOMETIMES"),
        (
            "defaultConfig: {drainDuration: soon}\n",
            "defaultConfig.drainDuration",
        ),
        ("enableAutoMtls: perhaps\n", "enableAutoMtls"),
        ("rootNamespace: Istio_System\n", "Istio_System"),
    ] {
        std::fs::write(&mesh, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
            .args(["--config-dir", dir.path().to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"])
            .args(["--mesh-config", mesh.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(want), "{text}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
        .args(["--config-dir", dir.path().to_str().unwrap()])
        .args(["--mesh-config", "/nonexistent/mesh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mesh"));
}
