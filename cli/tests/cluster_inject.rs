//! `meshctl kube-inject` against a cluster: without `--mesh-config` it injects
//! with the mesh config of the cluster's `istio-system/mesh-config` ConfigMap
//! (served by the in-process fake API server, the manifests' mesh.yaml with a
//! distinctive proxy image), `--offline` and an absent or unreachable cluster
//! use the defaults (a note on stderr, still success), and a reachable cluster
//! without the ConfigMap is an error naming it.

mod procs;

use mesh_e2e::fake_api::{self, Fake};
use serde_json::json;

const MESH_YAML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/base/mesh.yaml");
const IMAGE: &str = "registry.example/cluster-proxy:9.9.9";
const APP: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: web, ports: [{containerPort: 8080}]}
";

fn kube_inject(kubeconfig: &std::path::Path, extra: &[&str]) -> (bool, String, String) {
    inject_yaml(kubeconfig, APP, extra)
}

fn inject_yaml(kubeconfig: &std::path::Path, yaml: &str, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, yaml).unwrap();
    let args = [&["kube-inject", "-f", file.to_str().unwrap()], extra].concat();
    procs::meshctl(kubeconfig, &args)
}

#[test]
fn kube_inject_uses_the_clusters_mesh_config() {
    let shipped = std::fs::read_to_string(MESH_YAML).unwrap();
    assert!(shipped.contains("proxy: \"mesh\""), "{shipped}");
    let mesh = shipped.replace("proxy: \"mesh\"", &format!("proxy: \"{IMAGE}\""));
    let fake = Fake::new();
    fake.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "mesh-config", "namespace": "istio-system"},
            "data": {"mesh": mesh}}));
    let api = fake.spawn();
    let kc = api.kubeconfig();

    let (ok, out, err) = kube_inject(&kc, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("name: istio-proxy"), "{out}");
    assert!(out.contains(&format!("image: {IMAGE}")), "{out}");
    assert_eq!(
        api.seen(),
        ["GET /api/v1/namespaces/istio-system/configmaps/mesh-config"]
    );

    // --offline: the defaults, the API not asked.
    api.clear();
    let (ok, out, err) = kube_inject(&kc, &["--offline"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("name: istio-proxy") && !out.contains(IMAGE),
        "{out}"
    );
    assert!(api.seen().is_empty(), "{:?}", api.seen());

    // A reachable cluster without the ConfigMap: an error naming it and the way out.
    let empty = Fake::new().spawn();
    let (ok, _, err) = kube_inject(&empty.kubeconfig(), &[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("ConfigMap istio-system/mesh-config: not found") && err.contains("--offline"),
        "{err}"
    );
}

#[test]
fn kube_inject_without_a_cluster_falls_back_to_defaults() {
    let dir = tempfile::tempdir().unwrap();
    // No kubeconfig at all (and no in-cluster environment).
    let (ok, out, err) = kube_inject(&dir.path().join("absent"), &[]);
    assert!(ok && out.contains("name: istio-proxy"), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("using the default mesh config"), "{err}");

    // A kubeconfig whose API server does not answer.
    let kc = dir.path().join("kubeconfig");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &kc,
        fake_api::kubeconfig(&format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let (ok, out, err) = kube_inject(&kc, &[]);
    assert!(ok && out.contains("name: istio-proxy"), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unreachable") && err.contains("using the default mesh config"),
        "{err}"
    );
}

/// Null and empty documents (`--- null`, whitespace, comments) are skipped as
/// kubectl does; content on a `---` line starts the next document.
#[test]
fn kube_inject_skips_null_and_empty_documents() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "--- null\n---\n\t\n---\n# nothing\n---\n{APP}---\n~\n--- {{apiVersion: v1, kind: Service, metadata: {{name: s}}}}\n"
    );
    let (ok, out, err) = inject_yaml(&dir.path().join("absent"), &yaml, &["--offline"]);
    assert!(ok, "{err}");
    assert!(out.contains("name: istio-proxy"), "{out}");
    assert!(out.contains("kind: Service"), "{out}");
    let null_doc = |l: &str| matches!(l.trim(), "null" | "~" | "--- null" | "--- ~");
    assert!(!out.lines().any(null_doc), "{out}");
}
