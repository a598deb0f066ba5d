//! `meshctl demo`: the foundation demo. Builds a node with the real CNI plugins
//! (bridge + host-local), starts the echo app in one pod and calls it from another
//! pod over HTTP/1.1 and HTTP/2 (h2c) with curl, printing what each side saw.
//! The echo app is this same binary (`meshctl echo`), so the demo needs nothing
//! but `meshctl` and the system packages.

use std::time::Duration;

use anyhow::{bail, Context};
use mesh_e2e::echo::EchoReply;
use mesh_e2e::harness::Node;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port the echo app listens on inside its pod.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// UID the client and the app run as.
    #[arg(long, default_value_t = 1000)]
    uid: u32,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !nix_is_root() {
        bail!("meshctl demo creates network namespaces: run it as root");
    }
    let me = std::env::current_exe().context("locating meshctl")?;
    let me = me.to_str().context("meshctl path is not UTF-8")?;
    println!("[1/4] creating a node: bridge cni0 + host-local IPAM in its own network namespace");
    let node = Node::new()?;
    println!("[2/4] creating pods through the CNI chain (loopback, bridge, host-local)");
    let server = node.add_pod("echo-v1-0", "demo")?;
    let client = node.add_pod("client-0", "demo")?;
    println!(
        "      {:<10} {}  (netns {})",
        server.name(),
        server.ip(),
        server.netns()
    );
    println!(
        "      {:<10} {}  (netns {})",
        client.name(),
        client.ip(),
        client.netns()
    );
    println!(
        "[3/4] starting the echo app in {} on port {}",
        server.name(),
        args.port
    );
    let port = args.port.to_string();
    let mut app = server.spawn(
        args.uid,
        &[
            me,
            "echo",
            "--port",
            &port,
            "--pod",
            server.name(),
            "--namespace",
            "demo",
            "--service-account",
            "echo",
            "--labels",
            "app=echo,version=v1",
        ],
    )?;
    app.wait_for_line("mesh-echo listening", Duration::from_secs(10))?;
    println!("[4/4] calling it from {}", client.name());
    let url = format!("http://{}:{}/hello?from=demo", server.ip(), args.port);
    for (label, extra) in [
        ("HTTP/1.1", None),
        ("HTTP/2 (h2c)", Some("--http2-prior-knowledge")),
    ] {
        let mut argv = vec!["curl", "-sS", "--max-time", "5"];
        argv.extend(extra);
        argv.push(&url);
        let out = client.exec(args.uid, &argv)?;
        if !out.status.success() {
            bail!(
                "curl {label} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let reply: EchoReply = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "echo reply is not JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        println!(
            "      {label:<13} answered by pod {} (version {}) over {}, it saw the caller as {}",
            reply.pod,
            reply.version.as_deref().unwrap_or("-"),
            reply.protocol,
            reply.peer
        );
    }
    drop(app);
    println!("done: pods, node and namespaces removed");
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
