//! Kubernetes mode publishes the root bundle as ConfigMap `istio-ca-root-cert`
//! (key `root-cert.pem`) in every namespace, against the fake API server:
//! existing namespaces get it at start, a namespace created later gets it, and
//! a changed bundle (a reloaded CA) updates every copy.

use mesh_agent::config::Config;
use mesh_e2e::fake_api::Fake;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn namespace(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Waits until every namespace in `names` holds `bundle`.
async fn published(fake: &Fake, names: &[&str], bundle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|ns| {
                fake.get("ConfigMap", ns, "istio-ca-root-cert")
                    .and_then(|cm| cm["data"]["root-cert.pem"].as_str().map(str::to_string))
                    .as_deref()
                    != Some(bundle)
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no current istio-ca-root-cert in {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_bundle_configmap_in_every_namespace() {
    let fake = Fake::new();
    fake.apply(namespace("a"));
    fake.apply(namespace("b"));
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let client = fake.serve(shutdown.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_flags([
        "--config-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--debug-listen",
        "127.0.0.1:0",
        "--agent-name",
        "publish-test",
        "--debounce-ms",
        "10",
    ])
    .unwrap();
    let ca = mesh_agent::agent::ca_service(&cfg, Some(client)).unwrap();
    let source = Box::new(mesh_agent::source::files::FilesSource {
        dir: dir.path().to_path_buf(),
        debounce: Duration::from_millis(10),
    });
    let agent = mesh_agent::agent::start_with_ca(&cfg, source, ca, shutdown.clone())
        .await
        .unwrap();
    let service = agent.shared.ca.clone().unwrap();
    let first = service.current().roots().concat();
    assert!(first.starts_with("-----BEGIN CERTIFICATE-----"));

    published(&fake, &["a", "b"], &first).await;
    let cm = fake.get("ConfigMap", "a", "istio-ca-root-cert").unwrap();
    assert_eq!(cm["metadata"]["labels"]["istio.io/config"], "true", "{cm}");

    // A namespace created later gets its copy.
    fake.apply(namespace("c"));
    published(&fake, &["a", "b", "c"], &first).await;

    // A new bundle (here: another CA put in force) reaches every namespace.
    let next = mesh_agent::ca::Ca::self_signed("cluster.local", Duration::from_secs(3600)).unwrap();
    let second = next.roots().concat();
    assert_ne!(first, second);
    service.replace(next);
    published(&fake, &["a", "b", "c"], &second).await;

    // A deleted namespace is forgotten; a new one still works afterwards.
    fake.delete("Namespace", "", "b");
    fake.apply(namespace("d"));
    published(&fake, &["a", "c", "d"], &second).await;
}
