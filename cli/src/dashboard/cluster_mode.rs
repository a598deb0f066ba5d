//! `meshctl dashboard`: the dashboard of a Kubernetes mesh, each sidecar's
//! 15090 read through a port-forward via the API server (as `proxy-config`
//! reads 15000), Prometheus and Zipkin URLs from this host.

use anyhow::Context;

use super::{bind, serve, Args, Backend, Url};
use crate::cluster::{has_sidecar, is_running, pod_name, Cluster};

const PROMETHEUS_PORT: u16 = mesh_api::ports::PROMETHEUS;

struct ClusterBackend {
    cluster: Cluster,
}

impl Backend for ClusterBackend {
    fn name(&self) -> String {
        "cluster".into()
    }

    fn targets(&mut self) -> Result<Vec<String>, String> {
        let pods = self.cluster.list_all_pods("").map_err(|e| e.to_string())?;
        Ok(pods
            .iter()
            .filter(|p| has_sidecar(p) && is_running(p))
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or("default"),
                    pod_name(p)
                )
            })
            .collect())
    }

    fn scrape(&mut self, target: &str) -> Result<String, String> {
        let (ns, pod) = target.split_once('/').unwrap_or(("default", target));
        self.cluster
            .port_forward_get(ns, pod, PROMETHEUS_PORT, "/stats/prometheus")
            .map_err(|e| e.to_string())
    }

    fn get(&mut self, url: &Url, path_and_query: &str) -> Result<String, String> {
        crate::http_get::get_text(&url.addr, path_and_query).map_err(|e| format!("{e:#}"))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let urls = args.urls(None)?;
    let cluster = Cluster::connect().context(
        "no Kubernetes cluster reachable for `meshctl dashboard` (for a mesh on this machine: `meshctl local dashboard`)",
    )?;
    // Reachable at all? Asking once here gives one clear error instead of a
    // page of failed scrapes.
    cluster.list_all_pods("").with_context(|| {
        "no Kubernetes cluster reachable for `meshctl dashboard` (for a mesh on this machine: `meshctl local dashboard`)"
    })?;
    let listener = bind(args.port)?;
    serve(listener, Box::new(ClusterBackend { cluster }), &args, urls)
}
