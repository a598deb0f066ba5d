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

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Value};

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
    let agents: Vec<Answer> = args
        .agents
        .iter()
        .map(|a| Answer {
            addr: a.clone(),
            result: version_of(get_json(a, "/version")),
        })
        .collect();
    let webhooks: Vec<Answer> = args
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
    let proxies: Vec<Answer> = args
        .proxies
        .iter()
        .map(|a| Answer {
            addr: a.clone(),
            result: version_of(get_json(a, "/server_info")),
        })
        .collect();
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
