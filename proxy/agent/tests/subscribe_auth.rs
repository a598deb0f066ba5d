//! Subscriptions on the TLS port (an agent with a CA) are authenticated like
//! CSRs and served only for the caller's own pods, with both authenticators:
//! the local tokens file (files source) and TokenReview against the fake API
//! server (Kubernetes source). Refused, each with its reason and counted in
//! `/metrics`: another service account's pod, another namespace's pod, no
//! token, an unknown or expired token, a pod the agent does not know. The
//! client library re-reads its token file at every reconnection and gets its
//! view once the token is good and the pod known. The plaintext config-only
//! port trusts its network and serves anyone.
//!
//! Workload certificates presented as TLS client authenticate a subscription
//! on their own, under the same rule; refused: another pod's, one from another
//! CA, an expired one, one of another trust domain, and a certificate paired
//! with a token of another identity.

mod common;

use common::{refused, subscribed};
use futures::{SinkExt, StreamExt};
use mesh_agent::agent::Running;
use mesh_agent::client::{self, ClientCert, ClientConfig, CurrentCert, Transport};
use mesh_agent::config::Config;
use mesh_agent::protocol::{decode, encode, framed};
use mesh_api::syncapi::{AgentMessage, ClientMessage, ProxyIdentity, ProxyView};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const MESH: &str = include_str!("fixtures/mesh.yaml");

fn config(dir: &Path, tokens: Option<&Path>) -> Config {
    let mut flags = vec![
        "--config-dir".to_string(),
        dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--plaintext-listen".into(),
        "127.0.0.1:0".into(),
        "--debug-listen".into(),
        "127.0.0.1:0".into(),
        "--debounce-ms".into(),
        "10".into(),
        "--ca-root-out".into(),
        dir.join("root-cert.pem").display().to_string(),
    ];
    if let Some(t) = tokens {
        flags.extend(["--ca-tokens".to_string(), t.display().to_string()]);
    }
    Config::from_flags(flags).unwrap()
}

fn tls(dir: &Path) -> Transport {
    Transport::Tls {
        root_file: dir.join("root-cert.pem"),
        server_name: mesh_api::identity::ISTIOD_SERVER_NAME.into(),
    }
}

fn pod(ns: &str, name: &str) -> ProxyIdentity {
    ProxyIdentity {
        pod: name.into(),
        namespace: ns.into(),
        ..Default::default()
    }
}

/// One subscription's first answer: a view, or the agent's refusal.
async fn subscribe_once(
    addr: &str,
    transport: &Transport,
    identity: ProxyIdentity,
    token: Option<&str>,
) -> Result<ProxyView, String> {
    subscribe_as(addr, transport, None, identity, token).await
}

/// [`subscribe_once`], presenting `cert` as TLS client certificate.
async fn subscribe_as(
    addr: &str,
    transport: &Transport,
    cert: Option<&ClientCert>,
    identity: ProxyIdentity,
    token: Option<&str>,
) -> Result<ProxyView, String> {
    let mut io = framed(client::connect_as(addr, transport, cert).await.unwrap());
    io.send(encode(&ClientMessage::Subscribe {
        identity,
        last_version: None,
        token: token.map(str::to_string),
        requested: vec![],
        deltas: false,
    }))
    .await
    .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), io.next())
        .await
        .expect("an answer within 10s")
        .expect("an answer, not a closed stream")
        .unwrap();
    match decode::<AgentMessage>(&frame).unwrap() {
        AgentMessage::View { view, .. } => Ok(view),
        AgentMessage::Error { message } => Err(message),
        other => panic!("{other:?}"),
    }
}

/// `view` is web-1's: it lists the shop/web service.
fn assert_web_view(view: &ProxyView) {
    assert!(
        view.services
            .iter()
            .any(|s| s.hostname.starts_with("web.shop.")),
        "{view:?}"
    );
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What both authenticators must do. Tokens: `tok-web` is shop/web (pod
/// shop/web-1), `tok-stock` inventory/stock (pod inventory/stock-1; stock-2
/// runs as `default`). `add_pod` creates shop/web-9 as service account web.
async fn only_own_pods(agent: &Running, dir: &Path, add_pod: impl FnOnce()) {
    let addr = agent.sync_addr.to_string();
    let tls = tls(dir);
    let debug = agent.debug_addr;
    let view = subscribe_once(&addr, &tls, pod("shop", "web-1"), Some("tok-web"))
        .await
        .unwrap();
    assert_web_view(&view);
    assert!(
        subscribe_once(&addr, &tls, pod("inventory", "stock-1"), Some("tok-stock"))
            .await
            .is_ok()
    );
    let cases = [
        // Pod A's token subscribing as pod B of another service account.
        (
            pod("inventory", "stock-2"),
            Some("tok-stock"),
            "service_account",
            "\"default\"",
        ),
        (
            pod("inventory", "stock-1"),
            Some("tok-web"),
            "namespace",
            "\"shop\"",
        ),
        (
            pod("shop", "web-1"),
            None,
            "unauthenticated",
            "no credential",
        ),
        (
            pod("shop", "web-1"),
            Some("tok-nope"),
            "unauthenticated",
            "not",
        ),
        (
            pod("shop", "web-9"),
            Some("tok-web"),
            "unknown_pod",
            "shop/web-9",
        ),
    ];
    for (id, token, reason, names) in cases {
        let before = refused(debug, reason).await;
        let e = subscribe_once(&addr, &tls, id.clone(), token)
            .await
            .unwrap_err();
        assert!(e.contains(names), "{id:?} {token:?}: {e}");
        assert_eq!(refused(debug, reason).await, before + 1, "{id:?}: {e}");
    }
    // None of them shows up as a proxy.
    let z = common::syncz(debug).await;
    assert!(z.proxies.is_empty(), "{:?}", z.proxies);

    // The plaintext config-only port trusts its network: any pod, no token.
    let plain = agent.plaintext_addr.unwrap().to_string();
    let any = subscribe_once(
        &plain,
        &Transport::Plaintext,
        pod("inventory", "stock-2"),
        None,
    );
    assert!(any.await.is_ok());

    // The client library: a bad token is refused, the file is re-read at the
    // next connection; a pod the agent does not know yet is refused until it is.
    let token_file = dir.join("proxy-token");
    std::fs::write(&token_file, "tok-nope\n").unwrap();
    let mut cfg = ClientConfig::new(addr.clone(), pod("shop", "web-9"));
    cfg.transport = tls.clone();
    cfg.token_file = Some(token_file.clone());
    cfg.max_backoff = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (unauth, unknown) = (
        refused(debug, "unauthenticated").await,
        refused(debug, "unknown_pod").await,
    );
    let state = client::spawn(cfg, |_: &ProxyView| Ok(()), shutdown.clone());
    until("the bad token refused", async || {
        refused(debug, "unauthenticated").await > unauth
    })
    .await;
    std::fs::write(&token_file, "tok-web\n").unwrap();
    until("the unknown pod refused", async || {
        refused(debug, "unknown_pod").await > unknown
    })
    .await;
    assert!(state.borrow().current.is_none());
    add_pod();
    until("the view once the pod is known", async || {
        state.borrow().current.is_some()
    })
    .await;
}

const WEB_9: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web-9, namespace: shop, labels: {app: web}}\nspec:\n  serviceAccountName: web\n  containers: [{name: app, image: web}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tokens_subscribe_only_to_own_pods() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "tok-web shop web\ntok-stock inventory stock\n").unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(config_dir.join("mesh.yaml"), MESH).unwrap();
    let cfg = config(&config_dir, Some(&tokens));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let agent = common::start_files_agent(&cfg, &config_dir, &shutdown).await;
    let add = config_dir.join("web-9.yaml");
    only_own_pods(&agent, &config_dir, || std::fs::write(add, WEB_9).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_subscribe_only_to_own_pods() {
    let fake = mesh_e2e::fake_api::Fake::new();
    for d in mesh_e2e::fake_api::docs(MESH) {
        fake.apply(d);
    }
    fake.sa_token("tok-web", "shop", "web");
    fake.sa_token("tok-stock", "inventory", "stock");
    fake.expired_token("tok-expired");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let client = fake.serve(shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), None);
    let ca = mesh_agent::agent::ca_service(&cfg, Some(client.clone())).unwrap();
    let source = Box::new(mesh_agent::source::kubernetes::KubernetesSource { client });
    let agent = mesh_agent::agent::start_with_ca(&cfg, source, ca, shutdown.clone())
        .await
        .unwrap();
    // An expired projected token: the API server does not authenticate it.
    let addr = agent.sync_addr.to_string();
    let before = refused(agent.debug_addr, "unauthenticated").await;
    let e = subscribe_once(
        &addr,
        &tls(dir.path()),
        pod("shop", "web-1"),
        Some("tok-expired"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("expired"), "{e}");
    assert_eq!(
        refused(agent.debug_addr, "unauthenticated").await,
        before + 1
    );
    let web9: serde_json::Value = serde_yaml_ng::from_str(WEB_9).unwrap();
    only_own_pods(&agent, dir.path(), || fake.apply(web9)).await;
}

fn client_cert(leaf: &mesh_e2e::testca::Leaf) -> ClientCert {
    ClientCert {
        chain: vec![leaf.cert_der.clone().into()],
        key_der: leaf.key_der.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_certificates_subscribe_only_to_own_pods() {
    use mesh_e2e::testca::TestCa;
    let (mesh, other) = (
        TestCa::new("mesh-root", None),
        TestCa::new("other-root", None),
    );
    let dir = tempfile::tempdir().unwrap();
    let (cacerts, config_dir) = (dir.path().join("cacerts"), dir.path().join("config"));
    std::fs::create_dir(&cacerts).unwrap();
    std::fs::create_dir(&config_dir).unwrap();
    mesh.write_cacerts(&cacerts);
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "tok-web shop web\ntok-stock inventory stock\n").unwrap();
    std::fs::write(config_dir.join("mesh.yaml"), MESH).unwrap();
    let mut cfg = config(&config_dir, Some(&tokens));
    cfg.ca.ca_dir = Some(cacerts.clone());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let agent = common::start_files_agent(&cfg, &config_dir, &shutdown).await;
    let (addr, tls, debug) = (
        agent.sync_addr.to_string(),
        tls(&config_dir),
        agent.debug_addr,
    );

    // A certificate the agent issued through a CSR (token once), then the
    // certificate alone: the pod's view, counted as certificate-authenticated.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let signed =
        client::request_certificate(&addr, &tls, "tok-web", &csr, Duration::from_secs(600))
            .await
            .unwrap();
    let issued = ClientCert {
        chain: signed
            .chain
            .iter()
            .flat_map(|p| pem::parse_many(p).unwrap())
            .map(|b| b.into_contents().into())
            .collect(),
        key_der: key.serialize_der(),
    };
    let before = subscribed(debug, "certificate").await;
    let view = subscribe_as(&addr, &tls, Some(&issued), pod("shop", "web-1"), None)
        .await
        .unwrap();
    assert_web_view(&view);
    assert_eq!(subscribed(debug, "certificate").await, before + 1);

    // No certificate, a valid token: still served, counted as token.
    let before = subscribed(debug, "token").await;
    subscribe_as(&addr, &tls, None, pod("shop", "web-1"), Some("tok-web"))
        .await
        .unwrap();
    assert_eq!(subscribed(debug, "token").await, before + 1);
    // Both credentials, same identity: served.
    let before = subscribed(debug, "certificate_and_token").await;
    subscribe_as(
        &addr,
        &tls,
        Some(&issued),
        pod("shop", "web-1"),
        Some("tok-web"),
    )
    .await
    .unwrap();
    assert_eq!(subscribed(debug, "certificate_and_token").await, before + 1);

    let id = |td: &str, ns: &str, sa: &str| format!("spiffe://{td}/ns/{ns}/sa/{sa}");
    let web = client_cert(&mesh.workload(&id("cluster.local", "shop", "web"), false));
    let stock = client_cert(&mesh.workload(&id("cluster.local", "inventory", "stock"), false));
    let cases = [
        // Another namespace's pod, another service account's pod.
        (
            &web,
            pod("inventory", "stock-1"),
            None,
            "namespace",
            "\"shop\"",
        ),
        (
            &stock,
            pod("inventory", "stock-2"),
            None,
            "service_account",
            "\"default\"",
        ),
        (
            &client_cert(&other.workload(&id("cluster.local", "shop", "web"), false)),
            pod("shop", "web-1"),
            None,
            "certificate",
            "not signed by the mesh CA",
        ),
        (
            &client_cert(&mesh.workload(&id("cluster.local", "shop", "web"), true)),
            pod("shop", "web-1"),
            None,
            "certificate",
            "expired",
        ),
        (
            &client_cert(&mesh.workload(&id("other.domain", "shop", "web"), false)),
            pod("shop", "web-1"),
            None,
            "certificate",
            "\"other.domain\"",
        ),
        // A certificate and a token of different identities.
        (
            &web,
            pod("shop", "web-1"),
            Some("tok-stock"),
            "credentials_disagree",
            "inventory/sa/stock",
        ),
        // A good certificate does not excuse a bad token.
        (
            &web,
            pod("shop", "web-1"),
            Some("tok-nope"),
            "unauthenticated",
            "not known",
        ),
    ];
    for (cert, id, token, reason, names) in cases {
        let before = refused(debug, reason).await;
        let e = subscribe_as(&addr, &tls, Some(cert), id.clone(), token)
            .await
            .unwrap_err();
        assert!(e.contains(names), "{id:?} {token:?}: {e}");
        assert_eq!(refused(debug, reason).await, before + 1, "{id:?}: {e}");
    }
    // The TestCa-signed certificate of the right pod is as good as an issued one.
    assert!(
        subscribe_as(&addr, &tls, Some(&web), pod("shop", "web-1"), None)
            .await
            .is_ok()
    );

    // The client library presents the current certificate and keeps the
    // token (a bad one here) home: the view arrives by certificate.
    let token_file = dir.path().join("proxy-token");
    std::fs::write(&token_file, "tok-nope\n").unwrap();
    let mut c = ClientConfig::new(addr.clone(), pod("shop", "web-1"));
    c.transport = tls.clone();
    c.token_file = Some(token_file);
    let current = issued.clone();
    c.client_cert = Some(CurrentCert(std::sync::Arc::new(move || {
        Some(current.clone())
    })));
    let before = subscribed(debug, "certificate").await;
    let state = client::spawn(c, |_: &ProxyView| Ok(()), shutdown.clone());
    until("the view by certificate", async || {
        state.borrow().current.is_some()
    })
    .await;
    assert_eq!(subscribed(debug, "certificate").await, before + 1);
}
