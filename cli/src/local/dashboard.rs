//! `meshctl local dashboard`: the dashboard of a local mesh. The page's port is
//! bound on this host's loopback; then the process moves into the mesh's node
//! namespace (as the host-port forwarder does), where every pod IP, the
//! embedded trace collector, and a Prometheus run as in the `local_prometheus`
//! test are reachable.

use super::node::GATEWAY;
use super::state::RunDir;
use super::{collector, forward};
use crate::dashboard::{self, Backend, Url};

const PROMETHEUS_PORT: u16 = mesh_api::ports::PROMETHEUS;

struct LocalBackend {
    run: RunDir,
    name: String,
}

impl Backend for LocalBackend {
    fn name(&self) -> String {
        format!("local mesh {:?}", self.name)
    }

    fn targets(&mut self) -> Result<Vec<String>, String> {
        let st = self.run.load().map_err(|e| format!("{e:#}"))?;
        Ok(st
            .pods
            .iter()
            .filter(|p| p.sidecar && p.ip.is_some())
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect())
    }

    fn scrape(&mut self, target: &str) -> Result<String, String> {
        let st = self.run.load().map_err(|e| format!("{e:#}"))?;
        let ip = st
            .pods
            .iter()
            .find(|p| format!("{}/{}", p.namespace, p.name) == target)
            .and_then(|p| p.ip.clone())
            .ok_or_else(|| format!("pod {target} is gone"))?;
        crate::http_get::get_text(&format!("{ip}:{PROMETHEUS_PORT}"), "/stats/prometheus")
            .map_err(|e| format!("{e:#}"))
    }

    fn get(&mut self, url: &Url, path_and_query: &str) -> Result<String, String> {
        crate::http_get::get_text(&url.addr, path_and_query).map_err(|e| format!("{e:#}"))
    }
}

pub fn run(run: &RunDir, name: &str, args: &dashboard::Args) -> anyhow::Result<()> {
    let st = run.load()?;
    let collector = st.collector.as_ref().map(|_| Url {
        addr: format!("{GATEWAY}:{}", collector::PORT),
        base: String::new(),
    });
    let urls = args.urls(collector)?;
    let listener = dashboard::bind(args.port)?;
    // Still single-threaded: every thread started from here on is in the node.
    forward::enter_netns(&st.node_netns)?;
    dashboard::serve(
        listener,
        Box::new(LocalBackend {
            run: run.clone(),
            name: name.to_string(),
        }),
        args,
        urls,
    )
}
