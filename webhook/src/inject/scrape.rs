//! Istio's metrics merge: a sidecar pod is scraped on the status port
//! (`prometheus.io/port: 15020`, `path: /stats/prometheus`), which serves the
//! proxy's metrics followed by the app's. The app's own `prometheus.io/*`
//! annotations, which the pod's annotations no longer say, move to the proxy's
//! `ISTIO_PROMETHEUS_ANNOTATIONS` so it knows where to fetch the app's part.
//! Without this a pod whose app is scraped (Bookinfo's productpage) has its
//! sidecar's metrics never collected. `prometheus.io/scrape: "false"` and
//! `prometheus.istio.io/merge-metrics: "false"` leave the pod as it is, and so
//! does a port already pointing at the status port (a re-injected pod).

use std::collections::BTreeMap;

use mesh_api::annotations::{PROMETHEUS_PATH, PROMETHEUS_PORT, PROMETHEUS_SCRAPE};

use super::error::InjectError;
use super::read::bool_annotation;

/// Turns the merge off for one pod (Istio's `enablePrometheusMerge` per pod).
pub const MERGE_METRICS: &str = "prometheus.istio.io/merge-metrics";
/// Where the proxy finds the app's scrape settings (JSON: `scrape`, `path`, `port`).
pub const ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
const PROXY_PATH: &str = "/stats/prometheus";

/// What injection changes for scraping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The app's settings for the proxy, when the app is scraped itself.
    pub env: Option<String>,
    /// The pod's `prometheus.io/*` annotations, replacing the app's.
    pub annotations: [(&'static str, String); 3],
}

/// The merge for a pod with annotations `ann`, its status port `status_port`
/// (`None`: no status port, nothing serves the merged metrics).
pub fn plan(
    ann: &BTreeMap<String, String>,
    status_port: Option<u16>,
) -> Result<Option<Merge>, InjectError> {
    let Some(port) = status_port else {
        return Ok(None);
    };
    let merge = bool_annotation(ann, MERGE_METRICS)?.unwrap_or(true);
    let scraped = ann.get(PROMETHEUS_SCRAPE).map(String::as_str) != Some("false");
    if !merge || !scraped || ann.get(PROMETHEUS_PORT) == Some(&port.to_string()) {
        return Ok(None);
    }
    let app: BTreeMap<&str, &String> = [
        ("scrape", PROMETHEUS_SCRAPE),
        ("path", PROMETHEUS_PATH),
        ("port", PROMETHEUS_PORT),
    ]
    .into_iter()
    .filter_map(|(k, a)| Some((k, ann.get(a)?)))
    .collect();
    // Without a port there is nothing the proxy could fetch: the app's part
    // is dropped rather than handing the proxy settings it refuses.
    let env = app
        .contains_key("port")
        .then(|| serde_json::to_string(&app).unwrap_or_default());
    Ok(Some(Merge {
        env,
        annotations: [
            (PROMETHEUS_SCRAPE, "true".into()),
            (PROMETHEUS_PORT, port.to_string()),
            (PROMETHEUS_PATH, PROXY_PATH.into()),
        ],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ours() -> [(&'static str, String); 3] {
        [
            (PROMETHEUS_SCRAPE, "true".into()),
            (PROMETHEUS_PORT, "15020".into()),
            (PROMETHEUS_PATH, "/stats/prometheus".into()),
        ]
    }

    #[test]
    fn an_apps_own_scrape_settings_move_to_the_proxy() {
        let app = ann(&[
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "9080"),
            ("prometheus.io/path", "/metrics"),
        ]);
        let m = plan(&app, Some(15020)).unwrap().unwrap();
        assert_eq!(m.annotations, ours());
        let env: BTreeMap<String, String> = serde_json::from_str(&m.env.unwrap()).unwrap();
        assert_eq!(
            env,
            ann(&[("scrape", "true"), ("port", "9080"), ("path", "/metrics")])
        );
    }

    #[test]
    fn a_pod_without_settings_gets_the_status_port_only() {
        let m = plan(&ann(&[]), Some(15020)).unwrap().unwrap();
        assert_eq!((m.env, m.annotations), (None, ours()));
        // A scrape flag without a port: nothing to fetch from the app.
        let m = plan(&ann(&[("prometheus.io/scrape", "true")]), Some(15020))
            .unwrap()
            .unwrap();
        assert_eq!(m.env, None);
    }

    #[test]
    fn opting_out_or_reinjecting_changes_nothing() {
        for a in [
            ann(&[
                ("prometheus.io/scrape", "false"),
                ("prometheus.io/port", "9080"),
            ]),
            ann(&[
                ("prometheus.istio.io/merge-metrics", "false"),
                ("prometheus.io/port", "9080"),
            ]),
            ann(&[("prometheus.io/port", "15020")]),
        ] {
            assert_eq!(plan(&a, Some(15020)).unwrap(), None, "{a:?}");
        }
        assert_eq!(plan(&ann(&[]), None).unwrap(), None);
        let e = plan(
            &ann(&[("prometheus.istio.io/merge-metrics", "maybe")]),
            Some(15020),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("prometheus.istio.io/merge-metrics") && e.contains("maybe"),
            "{e}"
        );
    }
}
