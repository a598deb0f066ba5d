//! Gateway views end to end: a real agent on a files source (and on the
//! Kubernetes source against the fake API server) with a Gateway, bound
//! VirtualServices and a credential Secret; a router subscribes with the real
//! client, the Secret is rotated (a new version carries the new certificate,
//! no restart) and deleted (only that server's TLS turns to an error, shown in
//! /debug/syncz), and no key byte ever shows in the debug endpoint.

mod common;

use common::{secret, syncz};
use mesh_agent::client::{self, ClientConfig, ClientState};
use mesh_agent::compile::{Settings, Snapshot};
use mesh_agent::config::Config;
use mesh_agent::server::pipeline;
use mesh_agent::source::kubernetes::KubernetesSource;
use mesh_agent::source::Source;
use mesh_agent::view;
use mesh_api::syncapi::{GatewayTls, ProxyIdentity, ProxyView};
use mesh_e2e::testca::{write_file, TestCa};
use mesh_e2e::wait::eventually;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const GATEWAY: &str = include_str!("fixtures/gateway.yaml");

fn ingress(router: bool) -> ProxyIdentity {
    ProxyIdentity {
        pod: if router { "ingress-1" } else { "sidecar-1" }.into(),
        namespace: "istio-system".into(),
        service_account: "istio-ingressgateway".into(),
        labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        ips: vec!["10.9.0.1".into()],
        router,
    }
}

fn tls(v: &ProxyView, index: usize) -> Option<GatewayTls> {
    v.gateway
        .as_ref()?
        .listeners
        .iter()
        .flat_map(|l| &l.servers)
        .find(|s| s.gateway == "istio-system/gw" && s.index == index)?
        .tls
        .clone()
}

fn cert_of(v: &ProxyView, index: usize) -> Option<String> {
    Some(tls(v, index)?.credential?.cert_chain)
}

fn current(s: &watch::Receiver<ClientState>) -> Option<Arc<ProxyView>> {
    s.borrow().current.clone()
}

fn secrets(cred: Option<(&str, &str)>, shop: (&str, &str)) -> String {
    let mut docs = vec![secret(
        "istio-system",
        "shop-cred",
        &[("tls.crt", shop.0), ("tls.key", shop.1)],
        true,
    )];
    if let Some((c, k)) = cred {
        docs.push(secret(
            "istio-system",
            "cred",
            &[("tls.crt", c), ("tls.key", k)],
            false,
        ));
    }
    docs.join("\n---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_source_rotation_and_deletion_reach_the_router() {
    let ca = TestCa::new("gw-ca", None);
    let (a1, a2, shop) = (
        ca.leaf("a1", &["bookinfo.example.com"], false),
        ca.leaf("a2", &["bookinfo.example.com"], false),
        ca.leaf("shop", &["*.shop.example.com"], false),
    );
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "gateway.yaml", GATEWAY);
    write_file(
        dir.path(),
        "secrets.yaml",
        secrets(
            Some((&a1.cert_pem, &a1.key_pem)),
            (&shop.cert_pem, &shop.key_pem),
        ),
    );
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let cfg = Config::from_flags([
        "--config-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--debug-listen",
        "127.0.0.1:0",
        "--agent-name",
        "agent-gw",
    ])
    .unwrap();
    let agent = common::start_files_agent(&cfg, dir.path(), &shutdown).await;
    let addr = agent.sync_addr.to_string();
    let ok = |_: &ProxyView| Ok(());
    let router = client::spawn(
        ClientConfig::new(addr.clone(), ingress(true)),
        ok,
        shutdown.clone(),
    );
    let sidecar = client::spawn(
        ClientConfig::new(addr, ingress(false)),
        ok,
        shutdown.clone(),
    );
    let t = Duration::from_secs(10);

    eventually("the router's first certificate", t, async || {
        current(&router).and_then(|v| cert_of(&v, 1)) == Some(a1.cert_pem.clone())
    })
    .await;
    eventually("the sidecar's view", t, async || {
        current(&sidecar).is_some()
    })
    .await;
    assert_eq!(current(&sidecar).unwrap().gateway, None);
    let v1 = current(&router).unwrap();
    assert!(v1.virtual_services.is_empty());
    assert_eq!(v1.gateway.as_ref().unwrap().listeners.len(), 4);

    // Rotation: a new version with the new certificate, same agent, no restart.
    write_file(
        dir.path(),
        "secrets.yaml",
        secrets(
            Some((&a2.cert_pem, &a2.key_pem)),
            (&shop.cert_pem, &shop.key_pem),
        ),
    );
    eventually("the rotated certificate", t, async || {
        current(&router).and_then(|v| cert_of(&v, 1)) == Some(a2.cert_pem.clone())
    })
    .await;
    let v2 = current(&router).unwrap();
    assert!(v2.version > v1.version);
    assert_eq!(
        tls(&v2, 1).unwrap().credential.unwrap().private_key,
        a2.key_pem
    );

    // Deletion: that server's TLS turns to an error, the other keeps its certificate.
    write_file(
        dir.path(),
        "secrets.yaml",
        secrets(None, (&shop.cert_pem, &shop.key_pem)),
    );
    let want =
        "istio-system/gw servers[1]: secret istio-system/cred not found in the gateway's namespace";
    eventually("the deleted secret's error", t, async || {
        current(&router).and_then(|v| tls(&v, 1)?.error) == Some(want.into())
    })
    .await;
    let v3 = current(&router).unwrap();
    assert_eq!(tls(&v3, 1).unwrap().credential, None);
    assert_eq!(cert_of(&v3, 2), Some(shop.cert_pem.clone()));

    // proxy-status shows the warning on the router's row only.
    eventually("the warning in syncz", t, async || {
        syncz(agent.debug_addr)
            .await
            .proxies
            .iter()
            .any(|p| p.warnings == [want.to_string()])
    })
    .await;
    let z = syncz(agent.debug_addr).await;
    let side = z.proxies.iter().find(|p| p.name == "sidecar-1").unwrap();
    assert!(side.warnings.is_empty());
    let body = common::http_get(agent.debug_addr, "/debug/syncz").await;
    for key in [&a1.key_pem, &a2.key_pem, &shop.key_pem] {
        assert!(
            !body.contains(key.lines().nth(1).unwrap()),
            "key bytes in syncz"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_serves_and_rotates_gateway_secrets() {
    let ca = TestCa::new("gw-ca", None);
    let (a1, a2) = (
        ca.leaf("a1", &["bookinfo.example.com"], false),
        ca.leaf("a2", &["bookinfo.example.com"], false),
    );
    let fake = mesh_e2e::fake_api::Fake::new();
    for d in mesh_e2e::fake_api::docs(GATEWAY) {
        fake.apply(d);
    }
    let cred = |l: &mesh_e2e::testca::Leaf| -> serde_json::Value {
        serde_json::from_str(&secret(
            "istio-system",
            "cred",
            &[("tls.crt", &l.cert_pem), ("tls.key", &l.key_pem)],
            false,
        ))
        .unwrap()
    };
    fake.apply(cred(&a1));
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let client = fake.serve(shutdown.clone()).await;
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (snap_tx, snaps) = watch::channel(Arc::new(Snapshot::default()));
    tokio::spawn(Box::new(KubernetesSource { client }).run(ev_tx, shutdown.clone()));
    tokio::spawn(pipeline::run(
        ev_rx,
        Arc::new(Settings::default()),
        snap_tx,
        Duration::from_millis(30),
        shutdown.clone(),
    ));
    let id = ingress(true);
    let view_now = || view::build(&snaps.borrow(), &id);
    let t = Duration::from_secs(10);
    eventually("the listed secret", t, async || {
        cert_of(&view_now(), 1) == Some(a1.cert_pem.clone())
    })
    .await;
    fake.apply(cred(&a2));
    eventually("the watched rotation", t, async || {
        cert_of(&view_now(), 1) == Some(a2.cert_pem.clone())
    })
    .await;
    fake.delete("Secret", "istio-system", "cred");
    eventually("the watched deletion", t, async || {
        tls(&view_now(), 1)
            .and_then(|t| t.error)
            .is_some_and(|e| e.contains("secret istio-system/cred not found"))
    })
    .await;
}

const INGRESS_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: ingress-1, namespace: istio-system, labels: {istio: ingressgateway}}\nspec:\n  serviceAccountName: istio-ingressgateway\n  containers: [{name: istio-proxy, image: proxy}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_go_only_to_authenticated_routers() {
    let ca = TestCa::new("gw-ca", None);
    let (a, shop) = (
        ca.leaf("a", &["bookinfo.example.com"], false),
        ca.leaf("shop", &["*.shop.example.com"], false),
    );
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    write_file(&config_dir, "gateway.yaml", GATEWAY);
    write_file(&config_dir, "pod.yaml", INGRESS_POD);
    write_file(
        &config_dir,
        "secrets.yaml",
        secrets(
            Some((&a.cert_pem, &a.key_pem)),
            (&shop.cert_pem, &shop.key_pem),
        ),
    );
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "tok-gw istio-system istio-ingressgateway\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-gw").unwrap();
    let root = dir.path().join("root-cert.pem");
    let cfg = Config::from_flags([
        "--config-dir",
        config_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--plaintext-listen",
        "127.0.0.1:0",
        "--debug-listen",
        "127.0.0.1:0",
        "--ca-tokens",
        tokens.to_str().unwrap(),
        "--ca-root-out",
        root.to_str().unwrap(),
    ])
    .unwrap();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let agent = common::start_files_agent(&cfg, &config_dir, &shutdown).await;
    let ok = |_: &ProxyView| Ok(());
    let mut authed = ClientConfig::new(agent.sync_addr.to_string(), ingress(true));
    authed.transport = client::Transport::Tls {
        root_file: root.clone(),
        server_name: mesh_api::identity::ISTIOD_SERVER_NAME.into(),
    };
    authed.token_file = Some(token);
    let authed = client::spawn(authed, ok, shutdown.clone());
    let plain = ClientConfig::new(agent.plaintext_addr.unwrap().to_string(), ingress(true));
    let plain = client::spawn(plain, ok, shutdown.clone());
    let t = Duration::from_secs(10);
    eventually("the authenticated router's key", t, async || {
        current(&authed)
            .and_then(|v| tls(&v, 1)?.credential)
            .map(|c| c.private_key)
            == Some(a.key_pem.clone())
    })
    .await;
    eventually("the plaintext router's view", t, async || {
        current(&plain).is_some()
    })
    .await;
    let v = current(&plain).unwrap();
    for i in [1, 2] {
        let t = tls(&v, i).unwrap();
        assert_eq!(t.credential, None);
        assert!(t
            .error
            .unwrap()
            .contains("credentials are sent only on the authenticated sync port"));
    }
    assert_eq!(v.gateway.as_ref().unwrap().warnings.len(), 2);
}
