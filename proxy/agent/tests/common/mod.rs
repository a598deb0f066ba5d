//! Helpers shared by the agent's integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET path` on the agent's debug port (HTTP/1.1, one request).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    http_status(addr, path).await.1
}

/// The status code and body of `GET path` on the agent's debug port.
pub async fn http_status(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// `/debug/syncz`.
pub async fn syncz(debug: SocketAddr) -> mesh_api::syncapi::Syncz {
    let body = http_get(debug, "/debug/syncz").await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The agent's count of subscriptions refused for `reason` (`/metrics`).
pub async fn refused(debug: SocketAddr, reason: &str) -> u64 {
    counter(
        debug,
        &format!("mesh_agent_subscriptions_refused_total{{reason=\"{reason}\"}}"),
    )
    .await
}

/// The agent's count of subscriptions authenticated by `auth` (`token`,
/// `certificate`, `certificate_and_token`).
pub async fn subscribed(debug: SocketAddr, auth: &str) -> u64 {
    counter(
        debug,
        &format!("mesh_agent_subscriptions_total{{auth=\"{auth}\"}}"),
    )
    .await
}

/// One sample of the agent's `/metrics`, by name and labels.
pub async fn counter(debug: SocketAddr, series: &str) -> u64 {
    let body = http_get(debug, "/metrics").await;
    let key = format!("{series} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key:?} in {body}"))
        .parse()
        .unwrap()
}

/// Validates `cfg` and starts an agent with it over the files source at `dir`
/// (10 ms debounce), until `shutdown`.
pub async fn start_files_agent(
    cfg: &mesh_agent::config::Config,
    dir: &std::path::Path,
    shutdown: &tokio_util::sync::CancellationToken,
) -> mesh_agent::agent::Running {
    cfg.validate().unwrap();
    let source = Box::new(mesh_agent::source::files::FilesSource {
        dir: dir.to_path_buf(),
        debounce: std::time::Duration::from_millis(10),
    });
    mesh_agent::agent::start(cfg, source, shutdown.clone())
        .await
        .unwrap()
}

/// A store holding the YAML `files` (origin, text), as the files source
/// delivers them; document errors become origin errors.
pub fn store(files: &[(&str, &str)]) -> mesh_agent::store::Store {
    let mut s = mesh_agent::store::Store::default();
    for (origin, text) in files {
        let (objs, errs) = mesh_agent::objects::parse_yaml(text);
        s.apply(mesh_agent::store::SourceEvent::Replace {
            origin: origin.to_string(),
            objects: objs.into_iter().map(|(_, o)| o).collect(),
            errors: errs
                .iter()
                .map(|e| format!("{origin}:{}: {}", e.line, e.message))
                .collect(),
        });
    }
    s
}

/// A Secret document (JSON, which is YAML) with `data` (base64, as the API
/// server sends it) or, with `string_data`, the same keys as `stringData`.
pub fn secret(ns: &str, name: &str, keys: &[(&str, &str)], string_data: bool) -> String {
    let map: std::collections::BTreeMap<String, String> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut s = k8s_openapi::api::core::v1::Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        ..Default::default()
    };
    if string_data {
        s.string_data = Some(map);
    } else {
        s.data = Some(
            map.into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                .collect(),
        );
    }
    let mut v = serde_json::to_value(&s).unwrap();
    v["apiVersion"] = "v1".into();
    v["kind"] = "Secret".into();
    v.to_string()
}

/// The agent's flags in Kubernetes mode with its sync and debug ports on
/// loopback (ephemeral), named `agent-test`, then `extra`; validated.
pub fn kube_flags(extra: &[&str]) -> mesh_agent::config::Config {
    let base = [
        "--source",
        "kubernetes",
        "--listen",
        "127.0.0.1:0",
        "--debug-listen",
        "127.0.0.1:0",
        "--agent-name",
        "agent-test",
    ];
    let cfg = mesh_agent::config::Config::from_flags(base.iter().chain(extra).copied()).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// Starts the agent (no CA) with the Kubernetes source reading `client` (a
/// fake API server's), under the live `settings`, until `shutdown`.
pub async fn start_kube_agent(
    cfg: &mesh_agent::config::Config,
    settings: tokio::sync::watch::Receiver<std::sync::Arc<mesh_agent::compile::Settings>>,
    client: kube::Client,
    shutdown: &tokio_util::sync::CancellationToken,
) -> mesh_agent::agent::Running {
    mesh_agent::agent::start_live(
        cfg,
        settings,
        Box::new(mesh_agent::source::kubernetes::KubernetesSource { client }),
        None,
        shutdown.clone(),
    )
    .await
    .unwrap()
}
