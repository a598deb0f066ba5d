//! The files source end to end through the pipeline: real files, real inotify.
//! Every wait polls a condition with a deadline; nothing sleeps for readiness.

use mesh_agent::compile::{Settings, Snapshot};
use mesh_agent::server::pipeline;
use mesh_agent::source::files::FilesSource;
use mesh_agent::source::Source;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const MESH: &str = include_str!("fixtures/mesh.yaml");
const ISTIO: &str = include_str!("fixtures/istio.yaml");

struct Harness {
    snaps: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    fn start(dir: &Path) -> Self {
        let shutdown = CancellationToken::new();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (snap_tx, snaps) = watch::channel(Arc::new(Snapshot::default()));
        let src = Box::new(FilesSource {
            dir: dir.to_path_buf(),
            debounce: Duration::from_millis(30),
        });
        tokio::spawn(src.run(ev_tx, shutdown.clone()));
        tokio::spawn(pipeline::run(
            ev_rx,
            Arc::new(Settings::default()),
            snap_tx,
            Duration::from_millis(30),
            shutdown.clone(),
        ));
        Harness { snaps, shutdown }
    }

    /// Waits (bounded) until `f` holds for the latest snapshot; returns how long it took.
    async fn until(&mut self, what: &str, f: impl Fn(&Snapshot) -> bool) -> Duration {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        loop {
            if f(&self.snaps.borrow_and_update()) {
                return start.elapsed();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left, self.snaps.changed())
                    .await
                    .is_err()
            {
                let s = self.snaps.borrow();
                panic!(
                    "timed out waiting for {what}; services {:?}, rejected {:?}",
                    s.services.keys().collect::<Vec<_>>(),
                    s.rejected
                );
            }
        }
    }
}

fn endpoints(s: &Snapshot, host: &str) -> Vec<(String, bool)> {
    s.services
        .get(host)
        .map(|x| {
            x.endpoints
                .iter()
                .map(|e| (e.address.clone(), e.ready))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_modify_delete_of_each_kind_reaches_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("nested/deeper")).unwrap();
    std::fs::write(dir.path().join("nested/mesh.yaml"), MESH).unwrap();
    std::fs::write(dir.path().join("nested/deeper/istio.yml"), ISTIO).unwrap();
    let mut h = Harness::start(dir.path());
    h.until("initial load", |s| {
        s.services.len() == 4 && s.virtual_services.len() == 1
    })
    .await;

    // Service: add, modify (port), delete.
    let svc = |port: u16| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: cart, namespace: shop}}\nspec:\n  selector: {{app: cart}}\n  ports: [{{name: http, port: {port}}}]\n")
    };
    let f = dir.path().join("cart.yaml");
    std::fs::write(&f, svc(80)).unwrap();
    let took = h
        .until("service added", |s| {
            s.services
                .get("cart.shop.svc.cluster.local")
                .is_some_and(|x| x.ports[0].port == 80)
        })
        .await;
    // Seen on change (debounced), not on some slow resync; generous for loaded CI machines.
    assert!(took < Duration::from_secs(5), "change took {took:?}");
    std::fs::write(&f, svc(8080)).unwrap();
    h.until("service modified", |s| {
        s.services
            .get("cart.shop.svc.cluster.local")
            .is_some_and(|x| x.ports[0].port == 8080)
    })
    .await;

    // Pod: endpoints follow a pod matching the selector (no EndpointSlice for cart).
    let pod = |ready: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: cart-1, namespace: shop, labels: {{app: cart}}}}\nspec:\n  containers: [{{name: c, image: c}}]\nstatus:\n  podIP: 10.9.0.1\n  conditions: [{{type: Ready, status: \"{ready}\"}}]\n")
    };
    let pf = dir.path().join("cart-pod.yaml");
    std::fs::write(&pf, pod("True")).unwrap();
    h.until("pod endpoint", |s| {
        endpoints(s, "cart.shop.svc.cluster.local") == [("10.9.0.1".to_string(), true)]
    })
    .await;
    std::fs::write(&pf, pod("False")).unwrap();
    h.until("pod not ready", |s| {
        endpoints(s, "cart.shop.svc.cluster.local") == [("10.9.0.1".to_string(), false)]
    })
    .await;

    // EndpointSlice: takes over from pods when present, and back when deleted.
    let slice = |ip: &str| {
        format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: cart-x, namespace: shop, labels: {{kubernetes.io/service-name: cart}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n- addresses: [{ip}]\n")
    };
    let sf = dir.path().join("cart-slice.yaml");
    std::fs::write(&sf, slice("10.9.9.9")).unwrap();
    h.until("slice endpoint", |s| {
        endpoints(s, "cart.shop.svc.cluster.local") == [("10.9.9.9".to_string(), true)]
    })
    .await;
    std::fs::write(&sf, slice("10.9.9.8")).unwrap();
    h.until("slice modified", |s| {
        endpoints(s, "cart.shop.svc.cluster.local") == [("10.9.9.8".to_string(), true)]
    })
    .await;
    std::fs::remove_file(&sf).unwrap();
    h.until("slice deleted", |s| {
        endpoints(s, "cart.shop.svc.cluster.local") == [("10.9.0.1".to_string(), false)]
    })
    .await;
    std::fs::remove_file(&pf).unwrap();
    h.until("pod deleted", |s| {
        endpoints(s, "cart.shop.svc.cluster.local").is_empty()
    })
    .await;
    std::fs::remove_file(&f).unwrap();
    h.until("service deleted", |s| {
        !s.services.contains_key("cart.shop.svc.cluster.local")
    })
    .await;

    // Each Istio kind: add, modify, delete; observed through the snapshot lists.
    type Pick = fn(&Snapshot) -> Vec<String>;
    let kinds: Vec<(&str, &str, &str, Pick)> = vec![
        ("networking.istio.io/v1", "VirtualService", "spec: {hosts: [web], http: [{timeout: 1s, route: [{destination: {host: web}}]}]}", |s| s.virtual_services.iter().map(|a| format!("{}:{:?}", a.key.name, a.vs().http[0].timeout)).collect()),
        ("networking.istio.io/v1beta1", "DestinationRule", "spec: {host: web, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1s}}}}", |s| s.destination_rules.iter().map(|a| format!("{}:{:?}", a.key.name, a.dr().traffic_policy.as_ref().and_then(|t| t.connection_pool.as_ref()?.tcp.as_ref()?.connect_timeout.clone()))).collect()),
        ("networking.istio.io/v1alpha3", "Gateway", "spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"1s.example.com\"]}]}", |s| s.gateways.iter().map(|a| format!("{}:{}", a.key.name, a.gateway().servers[0].hosts[0])).collect()),
        ("networking.istio.io/v1", "Sidecar", "spec: {egress: [{hosts: [\"./1s.example.com\"]}]}", |s| s.sidecars.iter().map(|a| format!("{}:{}", a.key.name, a.sidecar().egress[0].hosts[0])).collect()),
        ("security.istio.io/v1", "AuthorizationPolicy", "spec: {rules: [{to: [{operation: {paths: [\"/1s\"]}}]}]}", |s| s.authorization_policies.iter().filter(|a| a.key.name == "k").map(|a| format!("{}:{}", a.key.name, a.ap().rules[0].to[0].operation.paths[0])).collect()),
    ];
    for (api, kind, spec, pick) in kinds {
        let f = dir.path().join(format!("kind-{kind}.yaml"));
        let doc = |spec: &str| {
            format!(
                "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: k, namespace: shop}}\n{spec}\n"
            )
        };
        let before = pick(&h.snaps.borrow());
        std::fs::write(&f, doc(spec)).unwrap();
        h.until(&format!("{kind} added"), |s| {
            pick(s)
                .iter()
                .any(|x| x.starts_with("k:") && x.contains("1s"))
        })
        .await;
        std::fs::write(&f, doc(&spec.replace("1s", "2s"))).unwrap();
        h.until(&format!("{kind} modified"), |s| {
            pick(s)
                .iter()
                .any(|x| x.starts_with("k:") && x.contains("2s"))
        })
        .await;
        std::fs::remove_file(&f).unwrap();
        h.until(&format!("{kind} deleted"), |s| pick(s) == before)
            .await;
    }
    // ServiceEntry and PeerAuthentication, whose effects are a service and a mode.
    let f = dir.path().join("se.yaml");
    let se = |port: u16| {
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: shop}}\nspec:\n  hosts: [ext.example.com]\n  ports: [{{number: {port}, name: tcp, protocol: TCP}}]\n")
    };
    std::fs::write(&f, se(1000)).unwrap();
    h.until("SE added", |s| {
        s.services
            .get("ext.example.com")
            .is_some_and(|x| x.ports[0].port == 1000)
    })
    .await;
    std::fs::write(&f, se(2000)).unwrap();
    h.until("SE modified", |s| {
        s.services
            .get("ext.example.com")
            .is_some_and(|x| x.ports[0].port == 2000)
    })
    .await;
    std::fs::remove_file(&f).unwrap();
    h.until("SE deleted", |s| {
        !s.services.contains_key("ext.example.com")
    })
    .await;
    // Deleting the folder with the Istio fixture drops its resources.
    std::fs::remove_dir_all(dir.path().join("nested/deeper")).unwrap();
    h.until("folder deleted", |s| {
        s.virtual_services.is_empty()
            && s.peer_authentications.is_empty()
            && !s.services.contains_key("api.payments.example")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_half_written_files_keep_the_last_good_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let good = dir.path().join("istio.yaml");
    std::fs::write(&good, ISTIO).unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n",
    )
    .unwrap();
    let mut h = Harness::start(dir.path());
    let broken = format!(
        "{}",
        dir.path()
            .canonicalize()
            .unwrap()
            .join("broken.yaml")
            .display()
    );
    h.until("initial load with a broken file", |s| {
        s.services.len() == 4
            && s.rejected.iter().any(|r| {
                r.resource == broken
                    && r.errors[0].starts_with(&format!("{broken}:5: did not find expected"))
            })
    })
    .await;
    // A half-written version of a good file: cut inside a flow mapping.
    let cut = ISTIO.find("trafficPolicy: {tls: {mode").unwrap() + 20;
    std::fs::write(&good, &ISTIO[..cut]).unwrap();
    let good_s = format!(
        "{}",
        dir.path()
            .canonicalize()
            .unwrap()
            .join("istio.yaml")
            .display()
    );
    h.until("half write reported", |s| {
        s.rejected.iter().any(|r| r.resource == good_s)
    })
    .await;
    let s = h.snaps.borrow().clone();
    assert_eq!(
        s.virtual_services.len(),
        1,
        "last good content of istio.yaml stays applied"
    );
    assert_eq!(s.destination_rules.len(), 1);
    // The completed write applies, and fixing the broken file clears its rejection.
    std::fs::write(
        &good,
        ISTIO
            .replace("weight: 90", "weight: 80")
            .replace("weight: 10", "weight: 20"),
    )
    .unwrap();
    h.until("completed write applied", |s| {
        !s.rejected.iter().any(|r| r.resource == good_s)
            && s.virtual_services
                .first()
                .is_some_and(|v| v.vs().http[0].route[0].weight == Some(80))
    })
    .await;
    std::fs::write(dir.path().join("broken.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: fixed, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n").unwrap();
    h.until("fixed file applied", |s| {
        s.rejected.is_empty() && s.services.contains_key("fixed.shop.svc.cluster.local")
    })
    .await;
}

/// An Istio Gateway and a Gateway API Gateway with the same namespace/name.
const TWO_GATEWAYS: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: PORT, protocol: HTTP}
"#;

const ROUTES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: infra}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: api, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: infra}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{path: {type: Exact, value: api/v1}}]
    backendRefs: [{name: api, port: 8080}]
"#;

#[test]
fn gateway_api_gateway_and_istio_gateway_coexist_in_the_store() {
    use mesh_agent::store::{SourceEvent, Store};
    let (objs, errs) = mesh_agent::objects::parse_yaml(&TWO_GATEWAYS.replace("PORT", "80"));
    assert!(errs.is_empty(), "{errs:?}");
    let mut store = Store::default();
    store.apply(SourceEvent::Replace {
        origin: "gw.yaml".into(),
        objects: objs.into_iter().map(|(_, o)| o).collect(),
        errors: vec![],
    });
    let keys: Vec<String> = store.objects.keys().map(ToString::to_string).collect();
    assert_eq!(
        keys,
        [
            "Gateway/infra/edge",
            "Gateway.gateway.networking.k8s.io/infra/edge"
        ]
    );
    assert!(store.objects.values().all(|e| e.findings.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_gateway_api_objects_are_rejected_with_their_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let gws = dir.path().join("gateways.yaml");
    std::fs::write(&gws, TWO_GATEWAYS.replace("PORT", "0")).unwrap();
    std::fs::write(dir.path().join("routes.yaml"), ROUTES).unwrap();
    let mut h = Harness::start(dir.path());
    let rejected = |s: &Snapshot, key: &str, needle: &str| {
        s.rejected
            .iter()
            .any(|r| r.resource == key && r.errors.iter().any(|e| e.contains(needle)))
    };
    // What /debug/syncz serves as `rejected` (server::debug::syncz copies it).
    h.until("gateway API rejections", |s| {
        rejected(
            s,
            "HTTPRoute/infra/bad",
            "spec.rules[0].matches[0].path.value: path \"api/v1\" must start with '/'",
        ) && rejected(
            s,
            "Gateway.gateway.networking.k8s.io/infra/edge",
            "spec.listeners[0].port: port 0 is out of range",
        )
    })
    .await;
    let s = h.snaps.borrow().clone();
    assert_eq!(
        s.gateways.len(),
        1,
        "the Istio Gateway of the same name applies"
    );
    assert_eq!(s.gateways[0].key.kind, "Gateway");
    assert!(!s
        .rejected
        .iter()
        .any(|r| r.resource == "HTTPRoute/infra/good"));
    assert!(!s
        .rejected
        .iter()
        .any(|r| r.resource == "Gateway/infra/edge"));
    // Fixing the Gateway API Gateway clears its rejection; the Istio one stays,
    // next to the Istio Gateway translated from the fixed one.
    std::fs::write(&gws, TWO_GATEWAYS.replace("PORT", "80")).unwrap();
    h.until("fixed gateway accepted", |s| {
        let (generated, own): (Vec<_>, Vec<_>) = s
            .gateways
            .iter()
            .partition(|g| mesh_agent::gatewayapi::is_generated(&g.key));
        !s.rejected
            .iter()
            .any(|r| r.resource.starts_with("Gateway.gateway.networking.k8s.io/"))
            && own.len() == 1
            && generated.len() == 1
            && s.rejected.len() == 1
    })
    .await;
}

/// A folder mounted from a ConfigMap, updated the way the kubelet does it: the
/// visible `mesh.yaml` is a symlink through `..data`, which is swapped to a new
/// hidden `..<timestamp>` folder. The update reaches the store as new content
/// of `mesh.yaml` itself; the hidden folders never become origins of their own
/// (which would load every object twice, old and new).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_replaces_the_visible_file_and_hidden_folders_stay_out() {
    use mesh_agent::objects::KubeObject;
    use mesh_agent::source::SourceEvent;
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let svc = |port: u16| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: cart, namespace: shop}}\nspec:\n  ports: [{{name: http, port: {port}}}]\n")
    };
    std::fs::create_dir(dir.join("..2026_12_06_a")).unwrap();
    std::fs::write(dir.join("..2026_12_06_a/mesh.yaml"), svc(80)).unwrap();
    symlink("..2026_12_06_a", dir.join("..data")).unwrap();
    symlink("..data/mesh.yaml", dir.join("mesh.yaml")).unwrap();

    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let src = Box::new(FilesSource {
        dir: dir.clone(),
        debounce: Duration::from_millis(30),
    });
    tokio::spawn(src.run(tx, shutdown.clone()));
    let visible = dir.join("mesh.yaml").display().to_string();
    const SYNCED: &str = "(synced)";
    let mut seen = Vec::new();
    // Waits (bounded) for `mesh.yaml` with a Service on `port`, noting every origin.
    let mut until_port = async |port: u16| {
        let want = format!("port {port}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = tokio::time::timeout(left, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {visible} with {want}; events: {seen:?}"))
                .expect("source running");
            let origin = match &ev {
                SourceEvent::Replace { origin, .. }
                | SourceEvent::Unreadable { origin, .. }
                | SourceEvent::Remove { origin } => origin.clone(),
                SourceEvent::Synced => SYNCED.to_string(),
            };
            seen.push(origin.clone());
            if let SourceEvent::Replace { objects, .. } = &ev {
                let ports: Vec<i32> = objects
                    .iter()
                    .filter_map(|o| match o {
                        KubeObject::Service(s) => s.spec.as_ref()?.ports.as_ref()?.first(),
                        _ => None,
                    })
                    .map(|p| p.port)
                    .collect();
                if origin == visible && ports == [i32::from(port)] {
                    return;
                }
            }
        }
    };
    until_port(80).await;
    // The kubelet's atomic update.
    std::fs::create_dir(dir.join("..2026_12_06_b")).unwrap();
    std::fs::write(dir.join("..2026_12_06_b/mesh.yaml"), svc(8080)).unwrap();
    symlink("..2026_12_06_b", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2026_12_06_a")).unwrap();
    until_port(8080).await;
    assert!(
        seen.iter().all(|o| o == &visible || o == SYNCED),
        "only the visible file is an origin: {seen:?}"
    );
    // The first scan ends with Synced, once.
    assert_eq!(seen.iter().filter(|o| *o == SYNCED).count(), 1, "{seen:?}");
    assert_eq!(seen[0], visible, "{seen:?}");
}
