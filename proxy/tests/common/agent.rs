//! A real `mesh-agent` on the node and what tests feed it or read from it
//! (Kubernetes YAML, its debug endpoints), for the tests that check the
//! proxies against the agent rather than against a view file.

use super::pods::{LOGS_TO_STDOUT, SH};
use mesh_e2e::bins::workspace_bin;
use mesh_e2e::harness::{Node, PodProcess};
use std::path::Path;
use std::time::Duration;

/// Where sidecars reach the agent: the node's bridge address, port 15012.
pub fn agent_addr() -> String {
    format!("{}:15012", mesh_e2e::harness::GATEWAY)
}

/// A real `mesh-agent` on the node over the YAML folder `config` (debounce
/// 20 ms), listening on [`agent_addr`], with `extra` arguments.
pub fn start_agent(node: &Node, config: &Path, extra: &[&str]) -> PodProcess {
    let bin = workspace_bin("mesh-agent");
    let listen = agent_addr();
    let mut argv = vec![
        SH,
        "-c",
        LOGS_TO_STDOUT,
        bin.to_str().unwrap(),
        "--config-dir",
        config.to_str().unwrap(),
        "--listen",
        &listen,
        "--debug-listen",
        "127.0.0.1:15014",
        "--debounce-ms",
        "20",
    ];
    argv.extend_from_slice(extra);
    let mut agent = node.spawn(&argv).unwrap();
    agent
        .wait_for_line("mesh-agent listening", Duration::from_secs(10))
        .unwrap();
    agent
}

/// The `echo` Service (VIP 10.96.0.20, ports 8080 `http` and 9000 `tcp-echo`)
/// as Kubernetes YAML, for tests that run a real agent over a folder.
pub const ECHO_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: default\nspec:\n  clusterIP: 10.96.0.20\n  selector:\n    app: echo\n  ports:\n  - name: http\n    port: 8080\n    targetPort: 8080\n  - name: tcp-echo\n    port: 9000\n    targetPort: 9000\n";

/// Runs `argv` in the node's namespace (where the agent listens); its stdout.
pub fn node_exec(node: &Node, argv: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", node.netns()])
        .args(argv)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The agent's `/debug/syncz` (what `meshctl proxy-status` shows), read in
/// the node's namespace; `Null` while the agent does not answer.
pub fn agent_syncz(node: &Node) -> serde_json::Value {
    let text = node_exec(node, &["curl", "-s", "http://127.0.0.1:15014/debug/syncz"]);
    serde_json::from_str(&text).unwrap_or_default()
}

/// A Pod as the API server would list it: Running, Ready, at `ip`.
pub fn pod_yaml(name: &str, ip: &str, sa: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: {v}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n{labels}spec:\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: echo\nstatus:\n  phase: Running\n  podIP: {ip}\n  conditions:\n  - type: Ready\n    status: \"True\"\n"
    )
}
