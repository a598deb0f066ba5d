//! The ServiceMeshControlPlane reconciler against the in-process fake API
//! server, with the agent's Kubernetes source, stream server and a subscribed
//! proxy: an SMCP renders the mesh-config ConfigMap, the gateways, the mesh-wide
//! PeerAuthentication and its status; an edit reaches the proxy; a bad edit is
//! reported in status and changes nothing else; deleting it restores the
//! user's config and removes what it created. And the `mesh-agent` binary in
//! Kubernetes mode runs the reconciler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_agent::client::{self, ClientConfig, ClientState};
use mesh_agent::maistra::controlplane::{ControlPlane, BASE_KEY, MESH_KEY};
use mesh_api::syncapi::ProxyIdentity;
use mesh_api::tracing::TracingProvider;
use mesh_e2e::fake_api::*;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod common;

/// Services and pods for the proxy to have a first view of.
const MESH: &str = include_str!("fixtures/mesh.yaml");
const NS: &str = "istio-system";
const BASE: &str = "# the user's mesh config\noutboundTrafficPolicy: {mode: ALLOW_ANY}\nrootNamespace: istio-system\nenableAutoMtls: true\n";

fn smcp(policy: &str, sampling: u32, egress: bool) -> Value {
    json!({
        "apiVersion": "maistra.io/v2", "kind": "ServiceMeshControlPlane",
        "metadata": {"name": "basic", "namespace": NS, "uid": "0b5e7e1e-0000-4000-8000-000000000001"},
        "spec": {
            "version": "v2.5",
            "tracing": {"type": "Jaeger", "sampling": sampling},
            "proxy": {
                "accessLogging": {"file": {"name": "/dev/stdout", "encoding": "JSON"}},
                "networking": {"trafficControl": {"outbound": {
                    "policy": policy,
                    "excludedIPRanges": ["169.254.169.254/32"],
                }}},
            },
            "gateways": {
                "ingress": {"service": {"type": "LoadBalancer", "loadBalancerIP": "192.0.2.10"}},
                "egress": {"enabled": egress},
                "openshiftRoute": {"enabled": false},
            },
            "security": {"dataPlane": {"mtls": true}},
            "addons": {"kiali": {"enabled": true}, "grafana": {"enabled": true}},
            "runtime": {"components": {"pilot": {"deployment": {"replicas": 2}}}},
        },
    })
}

fn view<T>(
    s: &watch::Receiver<ClientState>,
    f: impl Fn(&mesh_api::syncapi::ProxyView) -> T,
) -> Option<T> {
    s.borrow().current.as_deref().map(f)
}

async fn until(what: &str, mut f: impl FnMut() -> bool, fake: &Fake) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; SMCP: {:#}",
            fake.get("ServiceMeshControlPlane", NS, "basic")
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn condition(fake: &Fake, type_: &str) -> Option<Value> {
    let s = fake.get("ServiceMeshControlPlane", NS, "basic")?;
    s["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

fn cm_data(fake: &Fake, key: &str) -> Option<String> {
    fake.get("ConfigMap", NS, "mesh-config")?["data"][key]
        .as_str()
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smcp_renders_config_gateways_and_status_and_follows_edits() {
    let fake = Fake::new();
    for d in docs(MESH) {
        fake.apply(d);
    }
    fake.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "mesh-config", "namespace": NS}, "data": {"mesh": BASE}}));
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let kube = fake.serve(shutdown.clone()).await;
    let cfg = common::kube_flags(&[]);
    let (settings_tx, settings_rx) = watch::channel(Arc::new(cfg.settings()));
    let running = common::start_kube_agent(&cfg, settings_rx, kube.clone(), &shutdown).await;
    tokio::spawn(
        ControlPlane {
            client: kube.clone(),
            namespace: NS.into(),
            flags: cfg.clone(),
            base: None,
            settings: settings_tx,
            retry: Duration::from_millis(100),
        }
        .run(shutdown.clone()),
    );
    let id = ProxyIdentity {
        pod: "web-0".into(),
        namespace: "shop".into(),
        service_account: "default".into(),
        labels: [("app".to_string(), "web".to_string())].into(),
        ips: vec!["10.200.0.1".into()],
        router: false,
    };
    let state = client::spawn(
        ClientConfig::new(running.sync_addr.to_string(), id),
        |_: &mesh_api::syncapi::ProxyView| Ok(()),
        shutdown.clone(),
    );
    let policy = |s: &watch::Receiver<ClientState>| view(s, |v| v.outbound_traffic_policy.clone());
    until("first view", || policy(&state).is_some(), &fake).await;
    assert_eq!(policy(&state).as_deref(), Some("ALLOW_ANY"));
    assert!(view(&state, |v| v.access_log.is_none()).unwrap());

    // Apply: config, objects, status.
    fake.apply(smcp("ALLOW_ANY", 10000, true));
    until(
        "Reconciled",
        || condition(&fake, "Reconciled").is_some_and(|c| c["status"] == "True"),
        &fake,
    )
    .await;
    // Ready waits for the gateway Deployments' replicas.
    let ready = condition(&fake, "Ready").unwrap();
    assert_eq!(ready["status"], "False", "{ready}");
    assert_eq!(ready["reason"], "ComponentsNotReady", "{ready}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("Deployment/istio-ingressgateway (0/2 available)"),
        "{ready}"
    );
    for gw in ["istio-ingressgateway", "istio-egressgateway"] {
        let mut d = fake.get("Deployment", NS, gw).unwrap();
        d["status"] = json!({"availableReplicas": 2});
        fake.apply(d);
    }
    until(
        "Ready",
        || condition(&fake, "Ready").is_some_and(|c| c["status"] == "True"),
        &fake,
    )
    .await;
    let st = fake.get("ServiceMeshControlPlane", NS, "basic").unwrap()["status"].clone();
    let ignored: Vec<&str> = st["ignoredFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for p in [
        "spec.addons.kiali",
        "spec.addons.grafana",
        "spec.runtime",
        "spec.gateways.openshiftRoute",
    ] {
        assert!(ignored.contains(&p), "{p} in {ignored:?}");
    }
    let mesh = mesh_agent::meshfile::parse(&cm_data(&fake, MESH_KEY).unwrap()).unwrap();
    assert_eq!(mesh.mesh.access_log_file, "/dev/stdout");
    assert_eq!(
        mesh.mesh.redirect.exclude_ip_ranges,
        vec!["169.254.169.254/32".parse().unwrap()]
    );
    assert_eq!(cm_data(&fake, BASE_KEY).as_deref(), Some(BASE));
    for kind in [
        "ServiceAccount",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ] {
        for gw in ["istio-ingressgateway", "istio-egressgateway"] {
            let o = fake
                .get(kind, NS, gw)
                .unwrap_or_else(|| panic!("{kind} {gw} not created"));
            assert_eq!(
                o["metadata"]["ownerReferences"][0]["uid"],
                "0b5e7e1e-0000-4000-8000-000000000001"
            );
        }
    }
    let svc = fake.get("Service", NS, "istio-ingressgateway").unwrap();
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["loadBalancerIP"], "192.0.2.10");
    let pa = fake.get("PeerAuthentication", NS, "default").unwrap();
    assert_eq!(pa["spec"]["mtls"]["mode"], "STRICT");
    // The proxy runs the SMCP's access log and tracing.
    until(
        "access log and tracing on the proxy",
        || view(&state, |v| v.access_log.is_some() && v.tracing.is_some()) == Some(true),
        &fake,
    )
    .await;
    let tracing = view(&state, |v| v.tracing.clone()).unwrap().unwrap();
    assert_eq!(tracing.sampling, 100.0);
    assert_eq!(
        tracing.provider,
        Some(TracingProvider::Zipkin {
            address: "jaeger-collector.istio-system.svc:9411".into()
        })
    );

    // A second SMCP in the namespace is refused in its status (OSSM: one per namespace).
    let mut other = smcp("REGISTRY_ONLY", 0, false);
    other["metadata"]["name"] = json!("other");
    other["metadata"]["uid"] = json!("0b5e7e1e-0000-4000-8000-000000000002");
    fake.apply(other);
    until(
        "the second SMCP's status",
        || {
            fake.get("ServiceMeshControlPlane", NS, "other")
                .is_some_and(|o| o["status"]["conditions"][0]["reason"] == "Duplicate")
        },
        &fake,
    )
    .await;
    let o = fake.get("ServiceMeshControlPlane", NS, "other").unwrap();
    let msg = o["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(msg.contains("basic is in force"), "{msg}");
    assert_eq!(
        policy(&state).as_deref(),
        Some("ALLOW_ANY"),
        "basic stays in force"
    );
    fake.delete("ServiceMeshControlPlane", NS, "other");

    // Edit: REGISTRY_ONLY reaches the proxy; egress turned off is removed.
    let v1 = view(&state, |v| v.version).unwrap();
    fake.apply(smcp("REGISTRY_ONLY", 100, false));
    until(
        "REGISTRY_ONLY pushed",
        || policy(&state).as_deref() == Some("REGISTRY_ONLY"),
        &fake,
    )
    .await;
    assert!(view(&state, |v| v.version).unwrap() > v1);
    until(
        "egress pruned",
        || fake.get("Deployment", NS, "istio-egressgateway").is_none(),
        &fake,
    )
    .await;
    assert!(fake.get("Service", NS, "istio-egressgateway").is_none());
    assert!(fake.get("Deployment", NS, "istio-ingressgateway").is_some());
    until(
        "status after the edit",
        || condition(&fake, "Reconciled").is_some_and(|c| c["status"] == "True"),
        &fake,
    )
    .await;

    // A bad edit: status says why; proxy and ConfigMap keep the last good.
    let cm_before = cm_data(&fake, MESH_KEY).unwrap();
    fake.apply(smcp("ALLOW_ANY", 20000, false));
    until(
        "rejection in status",
        || condition(&fake, "Reconciled").is_some_and(|c| c["status"] == "False"),
        &fake,
    )
    .await;
    let rec = condition(&fake, "Reconciled").unwrap();
    let msg = rec["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.tracing.sampling") && msg.contains("20000"),
        "{msg}"
    );
    assert_eq!(rec["reason"], "ValidationFailed");
    assert_eq!(policy(&state).as_deref(), Some("REGISTRY_ONLY"));
    assert_eq!(cm_data(&fake, MESH_KEY).unwrap(), cm_before);

    // Delete: the gateways and the PeerAuthentication go, the user's config is back.
    fake.delete("ServiceMeshControlPlane", NS, "basic");
    until(
        "policy back to the base config",
        || policy(&state).as_deref() == Some("ALLOW_ANY"),
        &fake,
    )
    .await;
    until(
        "gateways removed",
        || {
            fake.get("Deployment", NS, "istio-ingressgateway").is_none()
                && fake.get("PeerAuthentication", NS, "default").is_none()
                && cm_data(&fake, MESH_KEY).as_deref() == Some(BASE)
        },
        &fake,
    )
    .await;
    assert!(cm_data(&fake, BASE_KEY).is_none());
    assert!(fake.get("Service", NS, "istio-ingressgateway").is_none());
}

/// Kills the agent process when the test ends (also on panic).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, fake: &Fake, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; SMCP: {:#}",
            fake.get("ServiceMeshControlPlane", NS, "basic")
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn the_agent_binary_in_kubernetes_mode_reconciles_smcps() {
    let fake = Fake::new();
    for d in docs(MESH) {
        fake.apply(d);
    }
    fake.apply(smcp("REGISTRY_ONLY", 100, false));
    // The base install's ingress gateway Service (not the SMCP's): left alone.
    fake.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": NS},
        "spec": {"type": "ClusterIP", "ports": [{"name": "http2", "port": 80}]}}));
    let api = fake.spawn();
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        "trustDomain: cluster.local\nrootNamespace: istio-system\n",
    )
    .unwrap();
    let _agent = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
            .args(["--source", "kubernetes"])
            .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"])
            .args(["--mesh-config", mesh.to_str().unwrap()])
            .env("KUBECONFIG", api.kubeconfig())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("Reconciled", &fake, || {
        condition(&fake, "Reconciled").is_some_and(|c| c["status"] == "True")
    });
    let m = mesh_agent::meshfile::parse(&cm_data(&fake, MESH_KEY).unwrap()).unwrap();
    assert_eq!(
        m.mesh.outbound_traffic_policy.mode,
        mesh_api::meshconfig::OutboundMode::RegistryOnly
    );
    // No ConfigMap before: the agent's own mesh config is the base to restore.
    let base = mesh_agent::meshfile::parse(&cm_data(&fake, BASE_KEY).unwrap()).unwrap();
    assert_eq!(
        base.mesh.outbound_traffic_policy.mode,
        mesh_api::meshconfig::OutboundMode::AllowAny
    );
    assert!(fake.get("Deployment", NS, "istio-ingressgateway").is_some());
    let msg = condition(&fake, "Reconciled").unwrap()["message"].clone();
    assert!(
        msg.as_str().unwrap().contains("left as they are")
            && msg
                .as_str()
                .unwrap()
                .contains("Service/istio-ingressgateway"),
        "{msg}"
    );
    fake.delete("ServiceMeshControlPlane", NS, "basic");
    wait_for("gateways removed", &fake, || {
        fake.get("Deployment", NS, "istio-ingressgateway").is_none()
            && cm_data(&fake, BASE_KEY).is_none()
    });
    let svc = fake
        .get("Service", NS, "istio-ingressgateway")
        .expect("not created by the SMCP: kept");
    assert!(svc["metadata"]["labels"].is_null(), "{svc}");
}
