//! `meshctl proxy-config <cluster|listener|route|endpoint|secret|all>
//! <ADMIN-ADDR|POD[.NAMESPACE]> [-n NS] [-o short|json]`: what one sidecar has in
//! force, read from its admin endpoint's `/config_dump` (the `compiled` tables of
//! `mesh_proxy::config_dump`) and `/certs`, printed with the columns of
//! `istioctl proxy-config`.
//!
//! A target that is `host:port` is the admin address itself (`127.0.0.1:15000`
//! inside the pod, or the local end of `kubectl port-forward POD 15000`); anything
//! else is a pod, whose admin pages are read through a port-forward via the API
//! server, as istioctl does (see `crate::cluster`).

use anyhow::Context;
use serde_json::Value;

use crate::cluster::{pod_and_namespace, Cluster};
use crate::http_get::{get_json, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "clusters", alias = "c")]
    Cluster,
    #[value(alias = "listeners", alias = "l")]
    Listener,
    #[value(alias = "routes", alias = "r")]
    Route,
    #[value(alias = "endpoints", alias = "ep")]
    Endpoint,
    /// The workload certificate and roots in use (from the sidecar's `/certs`).
    #[value(alias = "secrets", alias = "s")]
    Secret,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Short,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    kind: Kind,
    /// Pod (`POD` or `POD.NAMESPACE`), or the sidecar's admin address (host:port,
    /// e.g. 127.0.0.1:15000).
    target: String,
    /// Namespace of the pod (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "short")]
    output: Output,
    /// Only rows of this service FQDN (clusters, routes, endpoints).
    #[arg(long)]
    fqdn: Option<String>,
    /// Only rows of this port (clusters, listeners, routes).
    #[arg(long)]
    port: Option<u16>,
}

/// Where the admin pages come from.
enum Source {
    Addr(String),
    Pod {
        cluster: Box<Cluster>,
        ns: String,
        pod: String,
    },
}

impl Source {
    fn of(target: &str, namespace: Option<&str>) -> anyhow::Result<Source> {
        if is_admin_addr(target) {
            return Ok(Source::Addr(target.to_string()));
        }
        let cluster = Cluster::connect().with_context(|| {
            format!(
                "{target:?} is not an admin address (host:port), so it names a pod; \
                 for a sidecar outside Kubernetes run `kubectl port-forward {target} 15000` \
                 and pass 127.0.0.1:15000"
            )
        })?;
        let (pod, ns) = pod_and_namespace(target, namespace, cluster.namespace());
        Ok(Source::Pod {
            cluster: Box::new(cluster),
            ns,
            pod,
        })
    }

    fn name(&self) -> String {
        match self {
            Source::Addr(a) => format!("the sidecar at {a}"),
            Source::Pod { ns, pod, .. } => format!("the sidecar of pod {ns}/{pod}"),
        }
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        match self {
            Source::Addr(a) => get_json(a, path),
            Source::Pod { cluster, ns, pod } => {
                let body = cluster.sidecar_admin_get(ns, pod, path)?;
                serde_json::from_str(&body)
                    .with_context(|| format!("GET {path}: not JSON: {body:.200}"))
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let src = Source::of(&args.target, args.namespace.as_deref())?;
    let who = src.name();
    if args.kind == Kind::Secret {
        let certs = src
            .get("/certs")
            .with_context(|| format!("reading the certificates of {who}"))?;
        // A gateway also serves its servers' certificates (config dump rows).
        let gateway = src
            .get("/config_dump")
            .ok()
            .map(|d| d["compiled"]["secrets"].clone())
            .filter(|s| s.as_array().is_some_and(|a| !a.is_empty()));
        match (args.output, gateway) {
            (Output::Json, None) => println!("{}", serde_json::to_string_pretty(&certs)?),
            (Output::Json, Some(g)) => println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"workload": certs, "gateway": g})
                )?
            ),
            (_, g) => {
                print!("{}", secrets(&certs));
                if let Some(g) = g {
                    print!("\n{}", gateway_secrets(&g));
                }
            }
        }
        return Ok(());
    }
    let dump = src
        .get("/config_dump")
        .with_context(|| format!("reading the config of {who}"))?;
    let compiled = dump
        .get("compiled")
        .filter(|c| c.is_object())
        .with_context(|| format!("{who} has no configuration yet"))?;
    let filtered = filter(compiled, args.fqdn.as_deref(), args.port);
    print!("{}", render(&filtered, args.kind, args.output)?);
    if let Some(note) = rejection_note(&dump) {
        eprint!("{note}");
    }
    Ok(())
}

/// What the tables do not show: a newer config the proxy refused (it keeps
/// running `version`), each resource with its reason.
pub fn rejection_note(dump: &Value) -> Option<String> {
    let r = dump.get("rejected").filter(|r| r.is_object())?;
    let mut out = format!(
        "warning: the proxy refused config version {} and keeps running version {}:\n",
        s(&r["version"]),
        s(&dump["version"])
    );
    for e in r["errors"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}: {}\n", s(&e["resource"]), s(&e["error"])));
    }
    Some(out)
}

/// `host:port` (a name or IP and a numeric port); pod names cannot contain `:`.
fn is_admin_addr(target: &str) -> bool {
    target.parse::<std::net::SocketAddr>().is_ok()
        || matches!(target.rsplit_once(':'), Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok())
}

fn filter(compiled: &Value, fqdn: Option<&str>, port: Option<u16>) -> Value {
    // A row names its service as `host`, `host:port`, `Route: host:port` or a
    // cluster name `outbound|port|subset|host`.
    let fq = |v: &str| {
        fqdn.is_none_or(|f| {
            v == f
                || v.ends_with(&format!("|{f}"))
                || v.starts_with(&format!("{f}:"))
                || v.contains(&format!(" {f}:"))
        })
    };
    let pt = |v: Option<u64>| port.is_none_or(|p| v == Some(u64::from(p)));
    let cluster_port = |c: &str| c.split('|').nth(1).and_then(|p| p.parse().ok());
    let mut out = compiled.clone();
    let mut retain = |section: &str, f: &dyn Fn(&Value) -> bool| {
        if let Some(rows) = out[section].as_array_mut() {
            rows.retain(|r| f(r));
        }
    };
    let text = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_string();
    retain("clusters", &|r| {
        fq(&text(r, "serviceFqdn")) && pt(r["port"].as_u64())
    });
    retain("listeners", &|r| {
        fq(&text(r, "destination")) && pt(r["port"].as_u64())
    });
    retain("routes", &|r| {
        fq(&text(r, "vhost")) && pt(text(r, "name").parse().ok())
    });
    retain("endpoints", &|r| {
        let c = text(r, "cluster");
        fq(&c) && pt(cluster_port(&c))
    });
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn rows(compiled: &Value, section: &str) -> Vec<Value> {
    compiled[section].as_array().cloned().unwrap_or_default()
}

fn clusters(c: &Value) -> String {
    let mut t = vec![[
        "SERVICE FQDN",
        "PORT",
        "SUBSET",
        "DIRECTION",
        "TYPE",
        "DESTINATION RULE",
    ]
    .map(String::from)
    .to_vec()];
    for r in rows(c, "clusters") {
        t.push(vec![
            s(&r["serviceFqdn"]),
            s(&r["port"]),
            s(&r["subset"]),
            s(&r["direction"]),
            s(&r["type"]),
            s(&r["destinationRule"]),
        ]);
    }
    table(&t)
}

fn listeners(c: &Value) -> String {
    let mut t = vec![["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
        .map(String::from)
        .to_vec()];
    for r in rows(c, "listeners") {
        t.push(vec![
            s(&r["address"]),
            s(&r["port"]),
            s(&r["match"]),
            s(&r["destination"]),
        ]);
    }
    table(&t)
}

fn routes(c: &Value) -> String {
    let mut t = vec![
        ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
            .map(String::from)
            .to_vec(),
    ];
    for r in rows(c, "routes") {
        let domains: Vec<String> = r["domains"]
            .as_array()
            .map(|d| d.iter().map(s).collect())
            .unwrap_or_default();
        t.push(vec![
            s(&r["name"]),
            s(&r["vhost"]),
            domains.join(", "),
            s(&r["match"]),
            s(&r["virtualService"]),
        ]);
    }
    table(&t)
}

fn endpoints(c: &Value) -> String {
    let mut t = vec![["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]
        .map(String::from)
        .to_vec()];
    for r in rows(c, "endpoints") {
        t.push(vec![
            s(&r["endpoint"]),
            s(&r["status"]),
            s(&r["outlierCheck"]),
            s(&r["cluster"]),
        ]);
    }
    table(&t)
}

/// The table(s) or JSON for `kind`.
/// istioctl's `proxy-config secret` rows: the workload certificate, then the roots.
pub fn secrets(certs: &Value) -> String {
    let time = |k: &str| {
        certs[k]
            .as_u64()
            .map(|t| {
                let out = std::process::Command::new("date")
                    .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
                    .output();
                out.ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| t.to_string())
            })
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![vec![
        "RESOURCE NAME".to_string(),
        "TYPE".into(),
        "STATUS".into(),
        "IDENTITY".into(),
        "SERIAL NUMBER".into(),
        "NOT BEFORE".into(),
        "NOT AFTER".into(),
        "ROTATIONS".into(),
    ]];
    match certs["identity"].as_str() {
        Some(id) => {
            rows.push(vec![
                "default".into(),
                "Cert Chain".into(),
                "ACTIVE".into(),
                id.to_string(),
                s(&certs["serialNumber"]),
                time("issuedAt"),
                time("notAfter"),
                certs["rotations"].to_string(),
            ]);
            for i in 0..certs["roots"].as_u64().unwrap_or(0) {
                rows.push(vec![
                    format!(
                        "ROOTCA{}",
                        if i == 0 {
                            String::new()
                        } else {
                            format!("-{i}")
                        }
                    ),
                    "CA".into(),
                    "ACTIVE".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
        None => rows.push(vec![
            "default".into(),
            "Cert Chain".into(),
            "NONE (mTLS off: no workload certificate)".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]),
    }
    table(&rows)
}

/// A gateway's server certificates: where each comes from, its serial,
/// validity, SANs and the servers presenting it (never key material).
pub fn gateway_secrets(rows: &Value) -> String {
    let mut t = vec![[
        "RESOURCE NAME",
        "TYPE",
        "SERIAL NUMBER",
        "NOT BEFORE",
        "NOT AFTER",
        "SANS",
        "SERVERS",
    ]
    .map(String::from)
    .to_vec()];
    let list = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    for r in rows.as_array().into_iter().flatten() {
        t.push(vec![
            s(&r["source"]),
            if r["hasCa"] == true {
                "Cert Chain + CA"
            } else {
                "Cert Chain"
            }
            .into(),
            s(&r["serial"]),
            s(&r["notBefore"]),
            s(&r["notAfter"]),
            list(&r["sans"]),
            list(&r["servers"]),
        ]);
    }
    table(&t)
}

pub fn render(compiled: &Value, kind: Kind, output: Output) -> anyhow::Result<String> {
    let section = match kind {
        Kind::Cluster => Some("clusters"),
        Kind::Listener => Some("listeners"),
        Kind::Route => Some("routes"),
        Kind::Endpoint => Some("endpoints"),
        Kind::All | Kind::Secret => None,
    };
    if output == Output::Json {
        let v = match section {
            Some(sec) => compiled[sec].clone(),
            None => compiled.clone(),
        };
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    Ok(match kind {
        Kind::Cluster => clusters(compiled),
        Kind::Listener => listeners(compiled),
        Kind::Route => routes(compiled),
        Kind::Endpoint => endpoints(compiled),
        Kind::Secret => String::new(),
        Kind::All => [
            clusters(compiled),
            listeners(compiled),
            routes(compiled),
            endpoints(compiled),
        ]
        .join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_secrets_show_serial_validity_sans_and_servers() {
        let rows = serde_json::json!([{
            "source": "istio-system/a-cred", "serial": "1f2e", "notBefore": "Dec  1 00:00:00 2026 +00:00",
            "notAfter": "Dec  1 00:00:00 2027 +00:00", "sans": ["a.example.com"], "hasCa": true,
            "servers": ["https.443.https.gw.istio-system"]
        }]);
        let out = gateway_secrets(&rows);
        let line = out.lines().nth(1).unwrap();
        for want in [
            "istio-system/a-cred",
            "Cert Chain + CA",
            "1f2e",
            "a.example.com",
            "https.443.https.gw.istio-system",
        ] {
            assert!(line.contains(want), "{want} missing: {out}");
        }
    }

    #[test]
    fn a_refused_version_is_reported_with_each_resource() {
        let dump = serde_json::json!({
            "version": 4,
            "rejected": {"version": 5, "errors": [
                {"resource": "VirtualService/shop/web", "error": "http[0].timeout: missing unit in duration \"10\""}
            ]},
        });
        assert_eq!(
            rejection_note(&dump).unwrap(),
            "warning: the proxy refused config version 5 and keeps running version 4:\n  \
             VirtualService/shop/web: http[0].timeout: missing unit in duration \"10\"\n"
        );
        assert_eq!(
            rejection_note(&serde_json::json!({"version": 4, "rejected": null})),
            None
        );
    }
}
