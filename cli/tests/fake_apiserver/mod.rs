//! A small in-process Kubernetes API server for meshctl's cluster tests (no real
//! one exists here): plain HTTP on 127.0.0.1:0, serving GET of pods (one, or a
//! list by `app=` label), ConfigMaps, the pod proxy subresource
//! `pods/[https:]NAME:PORT/proxy/PATH` (forwarded with curl to a real process,
//! the way the API server dials a pod IP), and the port-forward subresource
//! `pods/NAME/portforward?ports=PORT` as the real one serves kube-rs: a WebSocket
//! upgrade with subprotocol `v4.channel.k8s.io`, channel 0 data and 1 error, the
//! first frame on each the port (u16 little-endian), then the data channel
//! bridged to a TCP connection to the real process on 127.0.0.1 (the kubelet
//! dials the pod's loopback), and a dial failure written on the error channel
//! in the kubelet's words before closing. Every
//! request line and Authorization header is recorded, so tests can check that
//! meshctl really went through the API. A kubeconfig file pointing at it is
//! written for `KUBECONFIG`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Objects {
    /// (namespace, name) → Pod JSON.
    pub pods: BTreeMap<(String, String), Value>,
    /// (namespace, name) → ConfigMap JSON.
    pub configmaps: BTreeMap<(String, String), Value>,
    /// "namespace/pod:port" → base URL of the real process behind it (for a
    /// port-forward, its host:port after the scheme).
    pub backends: BTreeMap<String, String>,
}

pub struct FakeApi {
    pub addr: SocketAddr,
    pub objects: Arc<Mutex<Objects>>,
    /// "GET /path?query" of every request, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Authorization headers seen.
    pub auth: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub fn pod(ns: &str, name: &str, labels: Value, containers: &[&str]) -> Value {
    let cs: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "x"}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": cs},
        "status": {"phase": "Running", "podIP": "10.1.0.1"},
    })
}

pub(crate) fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn query_param(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3D", "=")
                .replace("%3d", "=")
                .replace("%2C", ",")
        })
    })
}

async fn handle(st: Arc<Mutex<Objects>>, req: Request<Body>) -> Response {
    if req.uri().path().ends_with("/portforward") {
        return portforward::handle(st, req).await;
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(7, '/').collect();
    // api / v1 / namespaces / NS / KIND [/ NAME [/ proxy...]]
    if parts.len() < 5 || parts[..3] != ["api", "v1", "namespaces"] {
        return status(404, "NotFound", format!("the server could not find {path}"));
    }
    let (ns, kind) = (parts[3].to_string(), parts[4]);
    let name = parts.get(5).map(|s| s.to_string());
    match (kind, name, parts.get(6)) {
        ("pods", None, None) => {
            let sel = query_param(&query, "labelSelector").unwrap_or_default();
            let items: Vec<Value> = st
                .lock()
                .unwrap()
                .pods
                .iter()
                .filter(|((n, _), p)| {
                    *n == ns
                        && sel.split(',').filter(|s| !s.is_empty()).all(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            p["metadata"]["labels"][k] == v
                        })
                })
                .map(|(_, p)| p.clone())
                .collect();
            axum::Json(json!({"apiVersion": "v1", "kind": "PodList",
                "metadata": {"resourceVersion": "1"}, "items": items}))
            .into_response()
        }
        ("pods", Some(name), None) => match st.lock().unwrap().pods.get(&(ns, name.clone())) {
            Some(p) => axum::Json(p.clone()).into_response(),
            None => status(404, "NotFound", format!("pods \"{name}\" not found")),
        },
        ("configmaps", Some(name), None) => {
            match st.lock().unwrap().configmaps.get(&(ns, name.clone())) {
                Some(c) => axum::Json(c.clone()).into_response(),
                None => status(404, "NotFound", format!("configmaps \"{name}\" not found")),
            }
        }
        ("pods", Some(target), Some(rest)) if rest.starts_with("proxy") => {
            let sub = rest.trim_start_matches("proxy");
            let target = target.trim_start_matches("https:");
            let (pod, _port) = target.rsplit_once(':').unwrap_or((target, ""));
            let known = st
                .lock()
                .unwrap()
                .pods
                .contains_key(&(ns.clone(), pod.to_string()));
            if !known {
                return status(404, "NotFound", format!("pods \"{pod}\" not found"));
            }
            let backend = st
                .lock()
                .unwrap()
                .backends
                .get(&format!("{ns}/{target}"))
                .cloned();
            let Some(base) = backend else {
                // What a real API server says when nothing listens on the pod's port.
                return status(
                    503,
                    "ServiceUnavailable",
                    format!("error trying to reach service: dial tcp 10.1.0.1:{_port}: connect: connection refused"),
                );
            };
            forward(&format!("{base}{sub}")).await
        }
        _ => status(404, "NotFound", format!("the server could not find {path}")),
    }
}

mod portforward;

/// GET `url` from the real process (curl: plain HTTP or TLS without verification,
/// as the API server does towards pods).
async fn forward(url: &str) -> Response {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    match code.parse::<u16>() {
        Ok(c) if c >= 100 => (StatusCode::from_u16(c).unwrap(), body.to_string()).into_response(),
        _ => status(
            503,
            "ServiceUnavailable",
            format!(
                "error trying to reach service: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
    }
}

impl FakeApi {
    pub fn start(objects: Objects) -> FakeApi {
        let objects = Arc::new(Mutex::new(objects));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let auth = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (st, sn, au) = (objects.clone(), seen.clone(), auth.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(move |req: Request<Body>| {
                    let st = st.clone();
                    let line = match req.uri().query() {
                        Some(q) => format!("{} {}?{q}", req.method(), req.uri().path()),
                        None => format!("{} {}", req.method(), req.uri().path()),
                    };
                    sn.lock().unwrap().push(line);
                    if let Some(a) = req.headers().get("authorization") {
                        au.lock()
                            .unwrap()
                            .push(a.to_str().unwrap_or("").to_string());
                    }
                    handle(st, req)
                });
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeApi {
            addr,
            objects,
            seen,
            auth,
            dir,
            _stop: stop,
        };
        std::fs::write(fake.kubeconfig(), kubeconfig(&format!("http://{addr}"))).unwrap();
        fake
    }

    /// The kubeconfig file for `KUBECONFIG` (context namespace `shop`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The recorded request lines; kube-rs writes `?&key=v` for its first query
    /// parameter, shown here as `?key=v` (the empty pair carries nothing).
    pub fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.replacen("?&", "?", 1))
            .collect()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// A kubeconfig with one cluster at `server`, a token user and namespace `shop`.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"{server}\"}}
users:
- name: tester
  user: {{token: test-token}}
contexts:
- name: fake
  context: {{cluster: fake, user: tester, namespace: shop}}
current-context: fake
"
    )
}
