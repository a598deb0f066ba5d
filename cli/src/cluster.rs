//! meshctl's Kubernetes access: one small function per API call, over a kube-rs
//! client configured as kubectl finds its cluster (`KUBECONFIG`, `~/.kube/config`,
//! then the in-cluster service account).
//!
//! Sidecar admin pages (15000) and agent debug pages (15014) are read through a
//! port-forward, as kubectl and istioctl do:
//! `GET /api/v1/namespaces/{ns}/pods/{pod}/portforward?ports={port}` upgraded to a
//! WebSocket (`v4.channel.k8s.io`), one HTTP/1.1 GET over the forwarded stream.
//! The kubelet dials the port on the pod's loopback, so the sidecar admin and the
//! agent's debug listener, both bound to 127.0.0.1 in the pod like Istio's, are
//! reachable; the API server's pod proxy subresource would dial the pod IP and be
//! refused. The proxy subresource is used only for the webhook's `/version`
//! (HTTPS on the pod IP, where the webhook listens for the API server anyway).
//!
//! The commands are synchronous; a [`Cluster`] owns a single-threaded runtime and
//! blocks on each call.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};

/// The control plane namespace the manifests install into.
pub const CONTROL_NS: &str = "istio-system";
/// Labels and ports of the control plane pods (manifests/base/*/deployment.yaml).
pub const AGENT_SELECTOR: &str = "app=mesh-agent";
pub const WEBHOOK_SELECTOR: &str = "app=mesh-webhook";
pub const AGENT_DEBUG_PORT: u16 = 15014;
pub const WEBHOOK_PORT: u16 = mesh_api::ports::WEBHOOK;
pub const ADMIN_PORT: u16 = mesh_api::ports::ADMIN;
/// The mesh config ConfigMap (manifests/base/kustomization.yaml) and its key.
pub const MESH_CONFIGMAP: &str = "mesh-config";
pub const MESH_CONFIGMAP_KEY: &str = "mesh";
/// The sidecar container the injector adds (a native sidecar is an init container).
pub const SIDECAR: &str = "istio-proxy";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What failed talking to the cluster, naming the object or address.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no Kubernetes cluster configured (KUBECONFIG, ~/.kube/config, in-cluster): {0}")]
    NoConfig(String),
    #[error("building the Kubernetes client for {url}: {source}")]
    Client { url: String, source: kube::Error },
    #[error("the Kubernetes API server at {url} is unreachable ({what}): {}", chain(.source))]
    Unreachable {
        url: String,
        what: String,
        source: kube::Error,
    },
    #[error("{what}: not found (the API server answered 404: {message})")]
    NotFound { what: String, message: String },
    #[error("{what}: the API server answered {code}: {message}")]
    Api {
        what: String,
        code: u16,
        message: String,
    },
    #[error("pod {namespace}/{pod} has no {SIDECAR} container (not injected into the mesh)")]
    NoSidecar { namespace: String, pod: String },
    #[error("port-forward to pod {namespace}/{pod} port {port}: {message}")]
    PortForward {
        namespace: String,
        pod: String,
        port: u16,
        message: String,
    },
    #[error("ConfigMap {namespace}/{name} has no key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("starting the client runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// An error and its causes on one line (a connect error says why only in its source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

impl ClusterError {
    /// True when no cluster is configured or it cannot be reached at all (as
    /// opposed to the cluster answering with an error).
    pub fn is_offline(&self) -> bool {
        matches!(self, Self::NoConfig(_) | Self::Unreachable { .. })
    }
}

/// A connected client, its default namespace and the runtime it runs on.
pub struct Cluster {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    url: String,
    namespace: String,
}

impl Cluster {
    /// The cluster kubectl would use; the default namespace is the context's (else `default`).
    pub fn connect() -> Result<Cluster, ClusterError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut cfg = rt
            .block_on(kube::Config::infer())
            .map_err(|e| ClusterError::NoConfig(e.to_string()))?;
        cfg.connect_timeout = Some(CONNECT_TIMEOUT);
        cfg.read_timeout = Some(READ_TIMEOUT);
        // kube's controller-style retries (15, backoff up to minutes on 503) would
        // hang a command whose pod port is closed; a CLI reports at once instead.
        cfg.default_retry = false;
        let url = cfg.cluster_url.to_string();
        let namespace = cfg.default_namespace.clone();
        // The client's request buffer spawns a task: build it inside the runtime.
        let client = rt
            .block_on(async { kube::Client::try_from(cfg) })
            .map_err(|source| ClusterError::Client {
                url: url.clone(),
                source,
            })?;
        Ok(Cluster {
            rt,
            client,
            url,
            namespace,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn map_err(&self, what: String, e: kube::Error) -> ClusterError {
        match e {
            kube::Error::Api(s) if s.code == 404 => ClusterError::NotFound {
                what,
                message: s.message,
            },
            kube::Error::Api(s) => ClusterError::Api {
                what,
                code: s.code,
                message: if s.message.is_empty() {
                    s.reason
                } else {
                    s.message
                },
            },
            source => ClusterError::Unreachable {
                url: self.url.clone(),
                what,
                source,
            },
        }
    }

    /// `GET /api/v1/namespaces/{ns}/pods/{name}`.
    pub fn get_pod(&self, ns: &str, name: &str) -> Result<Pod, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.rt
            .block_on(api.get(name))
            .map_err(|e| self.map_err(format!("pod {ns}/{name}"), e))
    }

    /// `GET /api/v1/namespaces/{ns}/pods?labelSelector=...`.
    pub fn list_pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.rt
            .block_on(api.list(&ListParams::default().labels(selector)))
            .map(|l| l.items)
            .map_err(|e| self.map_err(format!("pods {selector:?} in {ns}"), e))
    }

    /// `GET /api/v1/pods[?labelSelector=...]`: pods of every namespace (an
    /// empty selector: all of them).
    pub fn list_all_pods(&self, selector: &str) -> Result<Vec<Pod>, ClusterError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut lp = ListParams::default();
        if !selector.is_empty() {
            lp = lp.labels(selector);
        }
        self.rt
            .block_on(api.list(&lp))
            .map(|l| l.items)
            .map_err(|e| self.map_err(format!("pods {selector:?} in all namespaces"), e))
    }

    /// `GET /api/v1/namespaces/{ns}/configmaps/{name}`.
    pub fn get_configmap(&self, ns: &str, name: &str) -> Result<ConfigMap, ClusterError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        self.rt
            .block_on(api.get(name))
            .map_err(|e| self.map_err(format!("ConfigMap {ns}/{name}"), e))
    }

    /// One key of a ConfigMap.
    pub fn configmap_key(&self, ns: &str, name: &str, key: &str) -> Result<String, ClusterError> {
        let cm = self.get_configmap(ns, name)?;
        cm.data
            .and_then(|mut d| d.remove(key))
            .ok_or_else(|| ClusterError::MissingKey {
                namespace: ns.into(),
                name: name.into(),
                key: key.into(),
            })
    }

    /// `GET /api/v1/namespaces/{ns}/pods/[https:]{pod}:{port}/proxy{path}`: a page
    /// of the pod, through the API server, which dials the pod IP (so only for
    /// listeners on the pod's address: the webhook).
    pub fn pod_proxy_get(
        &self,
        ns: &str,
        pod: &str,
        port: u16,
        https: bool,
        path: &str,
    ) -> Result<String, ClusterError> {
        let scheme = if https { "https:" } else { "" };
        let uri = format!("/api/v1/namespaces/{ns}/pods/{scheme}{pod}:{port}/proxy{path}");
        let req = http::Request::get(&uri)
            .header("accept", "application/json")
            .body(Vec::new())
            .map_err(|e| ClusterError::Api {
                what: uri.clone(),
                code: 0,
                message: e.to_string(),
            })?;
        self.rt
            .block_on(self.client.request_text(req))
            .map_err(|e| self.map_err(format!("GET {path} of pod {ns}/{pod} port {port}"), e))
    }

    /// GET `path` from the pod's `port` on its loopback, through a port-forward
    /// (`pods/{pod}/portforward?ports={port}`). A failure names pod and port, with
    /// the kubelet's own reason when it sent one (e.g. connection refused).
    pub fn port_forward_get(
        &self,
        ns: &str,
        pod: &str,
        port: u16,
        path: &str,
    ) -> Result<String, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let fail = |message: String| ClusterError::PortForward {
            namespace: ns.into(),
            pod: pod.into(),
            port,
            message,
        };
        self.rt.block_on(async {
            let mut pf = match api.portforward(pod, &[port]).await {
                Ok(pf) => pf,
                Err(e @ kube::Error::UpgradeConnection(_)) => return Err(fail(chain(&e))),
                Err(e) => {
                    return Err(
                        self.map_err(format!("port-forward to pod {ns}/{pod} port {port}"), e)
                    )
                }
            };
            let (Some(stream), Some(error)) = (pf.take_stream(port), pf.take_error(port)) else {
                pf.abort();
                return Err(fail("no stream for the port".into()));
            };
            let host = format!("localhost:{port}");
            let got = tokio::time::timeout(
                READ_TIMEOUT,
                crate::http_get::exchange_async(stream, &host, path),
            )
            .await;
            let result = match got {
                Ok(Ok(body)) => Ok(body),
                failed => {
                    // The pod side's reason (the kubelet writes it on the port's error
                    // channel, then closes) says more than a closed stream.
                    let reason = tokio::time::timeout(Duration::from_secs(2), error)
                        .await
                        .ok()
                        .flatten();
                    Err(fail(match (reason, failed) {
                        (Some(r), _) => r,
                        (None, Ok(Err(e))) => format!("{e:#}"),
                        (None, _) => format!("GET {path}: no answer in {READ_TIMEOUT:?}"),
                    }))
                }
            };
            pf.abort();
            result
        })
    }

    /// A page of a pod's sidecar admin (15000), after checking the pod has one.
    pub fn sidecar_admin_get(
        &self,
        ns: &str,
        pod: &str,
        path: &str,
    ) -> Result<String, ClusterError> {
        let p = self.get_pod(ns, pod)?;
        if !has_sidecar(&p) {
            return Err(ClusterError::NoSidecar {
                namespace: ns.into(),
                pod: pod.into(),
            });
        }
        self.port_forward_get(ns, pod, ADMIN_PORT, path)
    }
}

/// Whether the pod runs `istio-proxy` (a container, or a native-sidecar init container).
pub fn has_sidecar(p: &Pod) -> bool {
    p.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == SIDECAR)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == SIDECAR)
    })
}

/// Name of a pod, for listing.
pub fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// Whether a pod is running (pending or finished pods have nothing to answer).
pub fn is_running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|ph| ph == "Running")
}

/// `POD[.NAMESPACE]` as istioctl reads it: the part after the last dot is the
/// namespace; without a dot, `flag` or the kubeconfig's namespace.
pub fn pod_and_namespace(target: &str, flag: Option<&str>, default: &str) -> (String, String) {
    match target.rsplit_once('.') {
        Some((pod, ns)) if !pod.is_empty() && !ns.is_empty() => (pod.into(), ns.into()),
        _ => (target.into(), flag.unwrap_or(default).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dot_namespace() {
        assert_eq!(
            pod_and_namespace("web-0.shop", None, "default"),
            ("web-0".into(), "shop".into())
        );
        assert_eq!(
            pod_and_namespace("web-0", Some("ops"), "default"),
            ("web-0".into(), "ops".into())
        );
        assert_eq!(
            pod_and_namespace("web-0", None, "ctx"),
            ("web-0".into(), "ctx".into())
        );
    }
}
