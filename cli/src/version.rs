//! `meshctl version`: the client's version and, for each component it can reach,
//! that component's version, in `istioctl version`'s shape:
//!
//! ```text
//! client version: 0.1.0
//! control plane version: 0.1.0
//! data plane version: 0.1.0 (2 proxies)
//! ```
//!
//! Sources: each agent's debug `/version`, the webhook's HTTPS `/version`, each
//! proxy admin's `/server_info`. An unreachable component is reported on stderr
//! and left out; `-o json` gives every answer (and error) per address.
//!
//! Given no address, the components are found in the kubeconfig's cluster: the
//! running `app=mesh-agent` and `app=mesh-webhook` pods of the control plane
//! namespace and the proxies the agents report: agents and proxies through a
//! port-forward to their loopback-only ports, the webhook through the API
//! server's pod proxy subresource (it listens on the pod IP; see `crate::cluster`). With no cluster
//! configured, only the client version is printed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Value};

use k8s_openapi::api::core::v1::Pod;
use mesh_api::syncapi::Syncz;

use crate::cluster::{
    is_running, pod_name, Cluster, ClusterError, AGENT_DEBUG_PORT, AGENT_SELECTOR, CONTROL_NS,
    WEBHOOK_PORT, WEBHOOK_SELECTOR,
};
use crate::http_get::{get_json, get_json_tls};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agent debug address (host:port); repeat for several.
    #[arg(long = "agent")]
    agents: Vec<String>,
    /// Webhook HTTPS address (host:port); repeat for several replicas.
    #[arg(long = "webhook")]
    webhooks: Vec<String>,
    /// CA to verify the webhook with (without it the certificate is not checked;
    /// only the version is read).
    #[arg(long)]
    webhook_ca: Option<PathBuf>,
    /// TLS server name of the webhook.
    #[arg(long, default_value = "mesh-webhook.istio-system.svc")]
    webhook_name: String,
    /// Sidecar admin address (host:port); repeat for several proxies.
    #[arg(long = "proxy-admin")]
    proxies: Vec<String>,
    /// Only the client version.
    #[arg(long)]
    short: bool,
    #[arg(short = 'o', long = "output", value_parser = ["short", "json"], default_value = "short")]
    output: String,
    /// Namespace of the control plane (cluster mode).
    #[arg(long, default_value = CONTROL_NS)]
    istio_namespace: String,
}

/// Agents, webhooks and proxies of the cluster, each with what it answered.
fn from_cluster(c: &Cluster, ns: &str) -> anyhow::Result<[Vec<Answer>; 3]> {
    let ask = |pods: &[Pod], port, https, path| -> Vec<(String, anyhow::Result<Value>)> {
        pods.iter()
            .filter(|p| is_running(p))
            .map(|p| {
                let name = pod_name(p);
                // The webhook serves HTTPS on the pod IP (the proxy subresource
                // reaches it); the agent's debug port is loopback-only (port-forward).
                let got = if https {
                    c.pod_proxy_get(ns, &name, port, true, path)
                } else {
                    c.port_forward_get(ns, &name, port, path)
                };
                let v = got
                    .map_err(anyhow::Error::new)
                    .and_then(|b| serde_json::from_str(&b).context("answer is not JSON"));
                (format!("pod {ns}/{name}"), v)
            })
            .collect()
    };
    let agent_pods = c.list_pods(ns, AGENT_SELECTOR)?;
    let webhook_pods = c.list_pods(ns, WEBHOOK_SELECTOR)?;
    let agents = ask(&agent_pods, AGENT_DEBUG_PORT, false, "/version");
    let webhooks = ask(&webhook_pods, WEBHOOK_PORT, true, "/version");
    // The proxies: those the agents report connected (each once).
    let mut seen = std::collections::BTreeSet::new();
    for p in ask(&agent_pods, AGENT_DEBUG_PORT, false, "/debug/syncz") {
        if let Ok(Ok(z)) = p.1.map(serde_json::from_value::<Syncz>) {
            seen.extend(z.proxies.into_iter().map(|p| (p.namespace, p.name)));
        }
    }
    let proxies = seen
        .into_iter()
        .map(|(pns, name)| Answer {
            addr: format!("pod {pns}/{name}"),
            result: version_of(
                c.sidecar_admin_get(&pns, &name, "/server_info")
                    .map_err(anyhow::Error::new)
                    .and_then(|b| serde_json::from_str(&b).context("answer is not JSON")),
            ),
        })
        .collect();
    let answers = |xs: Vec<(String, anyhow::Result<Value>)>| {
        xs.into_iter()
            .map(|(addr, v)| Answer {
                addr,
                result: version_of(v),
            })
            .collect()
    };
    Ok([answers(agents), answers(webhooks), proxies])
}

/// What one component answered.
pub struct Answer {
    pub addr: String,
    pub result: anyhow::Result<String>,
}

fn version_of(v: anyhow::Result<Value>) -> anyhow::Result<String> {
    let v = v?;
    v["version"]
        .as_str()
        .map(String::from)
        .context("answer has no version")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let client = env!("CARGO_PKG_VERSION");
    if args.short {
        println!("{client}");
        return Ok(());
    }
    let ca = match &args.webhook_ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let mut from_k8s = None;
    if args.agents.is_empty() && args.webhooks.is_empty() && args.proxies.is_empty() {
        match Cluster::connect() {
            Ok(c) => match from_cluster(&c, &args.istio_namespace) {
                Ok(a) => from_k8s = Some(a),
                Err(e) => eprintln!("cluster: {e:#}"),
            },
            Err(ClusterError::NoConfig(_)) => {}
            Err(e) => eprintln!("cluster: {e}"),
        }
    }
    let [k8s_agents, k8s_webhooks, k8s_proxies] = from_k8s.unwrap_or_default();
    let mut agents: Vec<Answer> = args
        .agents
        .iter()
        .map(|a| Answer {
            addr: a.clone(),
            result: version_of(get_json(a, "/version")),
        })
        .collect();
    agents.extend(k8s_agents);
    let mut webhooks: Vec<Answer> = args
        .webhooks
        .iter()
        .map(|a| Answer {
            addr: a.clone(),
            result: version_of(get_json_tls(
                a,
                &args.webhook_name,
                ca.as_deref(),
                "/version",
            )),
        })
        .collect();
    webhooks.extend(k8s_webhooks);
    let mut proxies: Vec<Answer> = args
        .proxies
        .iter()
        .map(|a| Answer {
            addr: a.clone(),
            result: version_of(get_json(a, "/server_info")),
        })
        .collect();
    proxies.extend(k8s_proxies);
    if args.output == "json" {
        let j = |xs: &[Answer]| -> Vec<Value> {
            xs.iter()
                .map(|x| match &x.result {
                    Ok(v) => json!({"address": x.addr, "version": v}),
                    Err(e) => json!({"address": x.addr, "error": format!("{e:#}")}),
                })
                .collect()
        };
        let out = json!({"clientVersion": client, "agents": j(&agents),
            "webhooks": j(&webhooks), "dataPlane": j(&proxies)});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for x in agents.iter().chain(&webhooks).chain(&proxies) {
        if let Err(e) = &x.result {
            eprintln!("{} unreachable: {e:#}", x.addr);
        }
    }
    print!("{}", render(client, &agents, &webhooks, &proxies));
    Ok(())
}

/// Versions joined as istioctl does (`1.2.3` or `1.2.3, 1.2.4` when mixed).
fn versions<'a>(xs: impl IntoIterator<Item = &'a Answer>) -> Option<String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for x in xs {
        if let Ok(v) = &x.result {
            *seen.entry(v).or_default() += 1;
        }
    }
    (!seen.is_empty()).then(|| seen.keys().copied().collect::<Vec<_>>().join(", "))
}

pub fn render(client: &str, agents: &[Answer], webhooks: &[Answer], proxies: &[Answer]) -> String {
    let mut out = format!("client version: {client}\n");
    if let Some(v) = versions(agents.iter().chain(webhooks)) {
        out.push_str(&format!("control plane version: {v}\n"));
    }
    if let Some(v) = versions(proxies) {
        let n = proxies.iter().filter(|p| p.result.is_ok()).count();
        let s = if n == 1 { "proxy" } else { "proxies" };
        out.push_str(&format!("data plane version: {v} ({n} {s})\n"));
    }
    out
}
