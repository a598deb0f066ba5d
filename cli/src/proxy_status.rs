//! `meshctl proxy-status`: one row per proxy connected to each agent, from the
//! agents' `/debug/syncz` — name, namespace, agent, version sent and acknowledged,
//! and SYNCED / STALE / NOT SENT / ERROR (with the proxy's rejection reason).
//!
//! `--agent ADDR` reads agents directly. Without it, the agents are the running
//! `app=mesh-agent` pods of the control plane namespace of the kubeconfig's
//! cluster, each read through a port-forward via the API server (see
//! `crate::cluster`); with no cluster configured, the agent on 127.0.0.1:15014.

use anyhow::{bail, Context};
use mesh_api::syncapi::Syncz;

use crate::cluster::{
    is_running, pod_name, Cluster, ClusterError, AGENT_DEBUG_PORT, AGENT_SELECTOR, CONTROL_NS,
};

/// The agent's debug address when meshctl runs next to it (no cluster configured).
const LOCAL_AGENT: &str = "127.0.0.1:15014";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Debug address of an agent (host:port); repeat for several agents. Without
    /// it, the agent pods of the cluster.
    #[arg(long = "agent")]
    agents: Vec<String>,
    /// Namespace of the control plane (the agent pods).
    #[arg(long, default_value = CONTROL_NS)]
    istio_namespace: String,
    /// Only proxies of this namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut agents = args.agents.clone();
    if agents.is_empty() {
        match Cluster::connect() {
            Ok(c) => all = from_cluster(&c, &args.istio_namespace)?,
            Err(e @ ClusterError::NoConfig(_)) => {
                eprintln!("{e}; asking the agent at {LOCAL_AGENT}");
                agents.push(LOCAL_AGENT.into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    for a in &agents {
        all.push(fetch(a).with_context(|| format!("querying agent {a}"))?);
    }
    if let Some(ns) = &args.namespace {
        for z in &mut all {
            z.proxies.retain(|p| &p.namespace == ns);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", render(&all));
    }
    Ok(())
}

/// Every running agent pod's syncz, through the API server.
fn from_cluster(c: &Cluster, ns: &str) -> anyhow::Result<Vec<Syncz>> {
    let pods = c.list_pods(ns, AGENT_SELECTOR)?;
    let running: Vec<_> = pods.iter().filter(|p| is_running(p)).collect();
    if running.is_empty() {
        bail!("no running agent pods ({AGENT_SELECTOR}) in namespace {ns}: is the mesh installed?");
    }
    let mut out = Vec::new();
    for p in running {
        let name = pod_name(p);
        let body = c.port_forward_get(ns, &name, AGENT_DEBUG_PORT, "/debug/syncz")?;
        out.push(
            serde_json::from_str(&body)
                .with_context(|| format!("agent pod {ns}/{name} sent invalid syncz JSON"))?,
        );
    }
    Ok(out)
}

/// GET /debug/syncz (the debug port is loopback-only, plain HTTP/1.1).
fn fetch(addr: &str) -> anyhow::Result<Syncz> {
    let v = crate::http_get::get_json(addr, "/debug/syncz")?;
    serde_json::from_value(v).context("agent sent invalid syncz JSON")
}

/// The table, columns padded to their widest cell.
pub fn render(agents: &[Syncz]) -> String {
    let v = |x: Option<u64>| x.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut rows = vec![[
        "NAME",
        "NAMESPACE",
        "AGENT",
        "VERSION SENT",
        "VERSION ACKED",
        "STATUS",
    ]
    .map(String::from)];
    for z in agents {
        for p in &z.proxies {
            let status = match &p.reason {
                Some(r) => format!("{} ({r})", p.status),
                None => p.status.clone(),
            };
            rows.push([
                p.name.clone(),
                p.namespace.clone(),
                p.agent.clone(),
                v(p.version_sent),
                v(p.version_acked),
                status,
            ]);
        }
    }
    // istioctl proxy-status sets its columns three spaces apart.
    let mut out = crate::http_get::table_with_gap(&rows, "   ");
    // Warnings (a gateway's bad credential Secret) follow the table, one per line.
    for p in agents.iter().flat_map(|z| &z.proxies) {
        for w in &p.warnings {
            out.push_str(&format!("WARNING {}.{}: {w}\n", p.name, p.namespace));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::syncapi::ProxyStatus;
    use std::io::{Read, Write};

    fn sample() -> Syncz {
        let row = |name: &str, status: &str, sent, acked, reason: Option<&str>| ProxyStatus {
            name: name.into(),
            namespace: "shop".into(),
            agent: "mesh-agent-0".into(),
            version_sent: sent,
            version_acked: acked,
            status: status.into(),
            reason: reason.map(Into::into),
            warnings: vec![],
        };
        Syncz {
            agent: "mesh-agent-0".into(),
            version: 12,
            proxies: vec![
                row("web-1", "SYNCED", Some(12), Some(12), None),
                row(
                    "web-2",
                    "ERROR",
                    Some(12),
                    Some(11),
                    Some("listener conflict"),
                ),
                row("web-3", "NOT SENT", None, None, None),
            ],
            rejected: vec![],
        }
    }

    #[test]
    fn table_matches_istioctl_style() {
        assert_eq!(
            render(&[sample()]),
            "NAME    NAMESPACE   AGENT          VERSION SENT   VERSION ACKED   STATUS\n\
             web-1   shop        mesh-agent-0   12             12              SYNCED\n\
             web-2   shop        mesh-agent-0   12             11              ERROR (listener conflict)\n\
             web-3   shop        mesh-agent-0   -              -               NOT SENT\n"
        );
    }

    #[test]
    fn gateway_warnings_follow_the_table() {
        let mut z = sample();
        z.proxies[0].warnings =
            vec!["istio-system/gw servers[1]: secret istio-system/cred has no \"tls.key\"".into()];
        let out = render(&[z]);
        assert!(
            out.ends_with(
                "NOT SENT\nWARNING web-1.shop: istio-system/gw servers[1]: secret istio-system/cred has no \"tls.key\"\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn fetches_syncz_over_http() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let body = serde_json::to_string(&sample()).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
                req.push(byte[0]);
            }
            assert!(String::from_utf8_lossy(&req).starts_with("GET /debug/syncz HTTP/1.1"));
            let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
            write!(
                s,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{chunked}"
            )
            .unwrap();
        });
        let z = fetch(&addr).unwrap();
        server.join().unwrap();
        assert_eq!(z, sample());
        assert!(fetch("127.0.0.1:1").is_err());
    }
}
