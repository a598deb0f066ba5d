//! Where the app publishes Prometheus metrics, from the annotations the
//! injector saved (`ISTIO_PROMETHEUS_ANNOTATIONS`, JSON with `scrape`, `port`,
//! `path`, as Istio writes it), and fetching them for the merged endpoint.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    pub port: u16,
    pub path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppMetricsError {
    #[error("ISTIO_PROMETHEUS_ANNOTATIONS is not valid: {0}")]
    Config(String),
    #[error("fetching the app's metrics from 127.0.0.1:{port}{path}: {why}")]
    Fetch {
        port: u16,
        path: String,
        why: String,
    },
}

impl AppMetrics {
    /// `None` when the app does not ask to be scraped.
    pub fn from_env_value(v: &str) -> Result<Option<AppMetrics>, AppMetricsError> {
        if v.trim().is_empty() {
            return Ok(None);
        }
        let m: std::collections::BTreeMap<String, String> =
            serde_json::from_str(v).map_err(|e| AppMetricsError::Config(format!("{v:?}: {e}")))?;
        if m.get("scrape").map(String::as_str) != Some("true") {
            return Ok(None);
        }
        let port = m
            .get("port")
            .ok_or_else(|| AppMetricsError::Config("`port` is missing".into()))?
            .parse::<u16>()
            .map_err(|_| AppMetricsError::Config(format!("port {:?} is not a port", m["port"])))?;
        let path = m.get("path").cloned().unwrap_or_else(|| "/metrics".into());
        Ok(Some(AppMetrics { port, path }))
    }

    pub async fn fetch(&self) -> Result<String, AppMetricsError> {
        let err = |why: String| AppMetricsError::Fetch {
            port: self.port,
            path: self.path.clone(),
            why,
        };
        let fut = async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| err(e.to_string()))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(
                hyper_util::rt::TokioIo::new(crate::mtls::stream::MaybeTls::Plain(stream)),
            )
            .await
            .map_err(|e| err(e.to_string()))?;
            tokio::spawn(conn);
            let req = http::Request::get(self.path.as_str())
                .header("host", format!("127.0.0.1:{}", self.port))
                .body(crate::util::empty())
                .map_err(|e| err(e.to_string()))?;
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| err(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(err(format!("HTTP {}", resp.status())));
            }
            use http_body_util::BodyExt;
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| err(e.to_string()))?
                .to_bytes();
            Ok(String::from_utf8_lossy(&body).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .unwrap_or_else(|_| Err(err("timed out".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_annotations() {
        let m = AppMetrics::from_env_value(r#"{"scrape":"true","port":"9090","path":"/m"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            m,
            AppMetrics {
                port: 9090,
                path: "/m".into()
            }
        );
        assert!(
            AppMetrics::from_env_value(r#"{"scrape":"false","port":"9090"}"#)
                .unwrap()
                .is_none()
        );
        assert!(AppMetrics::from_env_value("").unwrap().is_none());
        assert!(AppMetrics::from_env_value(r#"{"scrape":"true","port":"x"}"#).is_err());
    }
}
