//! Application probes rewritten by the injector: Kubernetes probes the sidecar's
//! status port (`/app-health/<container>/{livez,readyz,startupz}`) and the proxy
//! runs the original probe from `ISTIO_KUBE_APP_PROBERS` against the app, so
//! probes keep working when mTLS is strict.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prober {
    pub http_get: Option<HttpGet>,
    pub tcp_socket: Option<TcpSocket>,
    pub grpc: Option<Grpc>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default)]
    pub path: Option<String>,
    pub port: serde_json::Value,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<NameValue>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TcpSocket {
    pub port: serde_json::Value,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Grpc {
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("ISTIO_KUBE_APP_PROBERS is not valid JSON: {0}")]
    Config(String),
    #[error("probe port {0} is not a number (named ports must be resolved by the injector)")]
    Port(String),
    #[error("probe failed: {0}")]
    Failed(String),
}

/// The registered probes, keyed by their `/app-health/...` path.
#[derive(Debug, Default)]
pub struct Probers {
    probes: HashMap<String, Prober>,
}

fn port_of(v: &serde_json::Value) -> Result<u16, ProbeError> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| ProbeError::Port(v.to_string())),
        serde_json::Value::String(s) => s.parse().map_err(|_| ProbeError::Port(s.clone())),
        other => Err(ProbeError::Port(other.to_string())),
    }
}

impl Probers {
    pub fn parse(json: &str) -> Result<Probers, ProbeError> {
        if json.trim().is_empty() {
            return Ok(Probers::default());
        }
        let probes: HashMap<String, Prober> =
            serde_json::from_str(json).map_err(|e| ProbeError::Config(e.to_string()))?;
        Ok(Probers { probes })
    }

    /// Runs the probe registered for `path`; `None` when there is none.
    pub async fn run(&self, path: &str) -> Option<Result<(), ProbeError>> {
        let p = self.probes.get(path)?;
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1));
        let fut = async {
            if let Some(h) = &p.http_get {
                let port = port_of(&h.port)?;
                let host = h.host.clone().unwrap_or_else(|| "127.0.0.1".into());
                let stream = tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| ProbeError::Failed(format!("connect {host}:{port}: {e}")))?;
                let (mut send, conn) = hyper::client::conn::http1::handshake(
                    hyper_util::rt::TokioIo::new(crate::mtls::stream::MaybeTls::Plain(stream)),
                )
                .await
                .map_err(|e| ProbeError::Failed(e.to_string()))?;
                tokio::spawn(conn);
                let mut req = http::Request::get(h.path.clone().unwrap_or_else(|| "/".into()))
                    .header("host", format!("{host}:{port}"))
                    .header("user-agent", "kube-probe/1.37");
                for nv in &h.http_headers {
                    req = req.header(nv.name.as_str(), nv.value.as_str());
                }
                let req = req
                    .body(crate::util::empty())
                    .map_err(|e| ProbeError::Failed(e.to_string()))?;
                let resp = send
                    .send_request(req)
                    .await
                    .map_err(|e| ProbeError::Failed(e.to_string()))?;
                let code = resp.status().as_u16();
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(ProbeError::Failed(format!("HTTP {code}")))
                }
            } else if let Some(t) = &p.tcp_socket {
                let port = port_of(&t.port)?;
                let host = t.host.clone().unwrap_or_else(|| "127.0.0.1".into());
                tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map(|_| ())
                    .map_err(|e| ProbeError::Failed(format!("connect {host}:{port}: {e}")))
            } else if let Some(g) = &p.grpc {
                tokio::net::TcpStream::connect(("127.0.0.1", g.port))
                    .await
                    .map(|_| ())
                    .map_err(|e| ProbeError::Failed(format!("grpc port {}: {e}", g.port)))
            } else {
                Err(ProbeError::Failed(
                    "probe has no httpGet, tcpSocket or grpc".into(),
                ))
            }
        };
        Some(
            tokio::time::timeout(timeout, fut)
                .await
                .unwrap_or_else(|_| {
                    Err(ProbeError::Failed(format!("timed out after {timeout:?}")))
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_format() {
        let p = Probers::parse(
            r#"{"/app-health/hello/livez":{"httpGet":{"path":"/ip","port":8080,"scheme":"HTTP"},"timeoutSeconds":1},
               "/app-health/hello/readyz":{"tcpSocket":{"port":9000},"timeoutSeconds":1}}"#,
        )
        .unwrap();
        assert_eq!(p.probes.len(), 2);
        assert!(Probers::parse("{not json").is_err());
        assert!(Probers::parse("").unwrap().probes.is_empty());
    }
}
