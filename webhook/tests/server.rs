//! The HTTPS admission server end to end over real TLS on loopback: a client
//! trusting the CA gets patched pods (v1 and v1beta1); cert files replaced on disk
//! are served to new connections while an open keep-alive connection keeps working;
//! mesh config reloads (bad ones rejected, last good stays); bad input gets the
//! status codes of the issue; slow clients are cut off by the timeouts.

mod common;

use std::time::Duration;

use common::net::{Client, TestServer};
use common::{apply_response, review_for, TestCa};
use mesh_e2e::wait::eventually;
use mesh_webhook::reload::ReloadStats;
use mesh_webhook::server::Limits;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pod(annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}, "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}]}})
}

fn proxy_image(patched: &Value) -> Option<String> {
    patched["spec"]["initContainers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "istio-proxy")
        .and_then(|c| c["image"].as_str())
        .map(String::from)
}

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_admission_and_cert_reload() {
    let ca = TestCa::new("ca-one");
    let (cert, key) = ca.serving();
    let srv = TestServer::start(&cert, &key, "", limits()).await;

    let mut c = Client::connect(srv.addr, &ca.cert_pem).await.unwrap();
    let (status, body) = c.request("GET", "/healthz", None, vec![]).await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
    assert_eq!(c.request("GET", "/readyz", None, vec![]).await.0, 200);
    for api in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
        let p = pod(json!({}));
        let r = c.post_json(&review_for(&p, "uid-42", api)).await;
        assert_eq!(r["apiVersion"], api);
        assert_eq!(r["response"]["uid"], "uid-42");
        assert_eq!(r["response"]["allowed"], true);
        let patched = apply_response(&p, &r);
        assert!(proxy_image(&patched).is_some(), "{patched}");
    }

    // A client that does not trust this CA is refused.
    let other = TestCa::new("ca-other");
    assert!(Client::connect(srv.addr, &other.cert_pem).await.is_err());

    // Replace the files with a cert from another CA: new handshakes get it.
    let (cert2, key2) = other.serving();
    // Not atomic on purpose: a half-replaced pair is rejected until both are there.
    std::fs::write(&srv.key, &key2).unwrap();
    std::fs::write(&srv.cert, &cert2).unwrap();
    let addr = srv.addr;
    let other_pem = other.cert_pem.clone();
    eventually("the new cert to be served", Duration::from_secs(5), || {
        let pem = other_pem.clone();
        async move { Client::connect(addr, &pem).await.is_ok() }
    })
    .await;
    let fresh = Client::connect(addr, &other.cert_pem).await.unwrap();
    let new_der = rustls::pki_types::pem::PemObject::from_pem_slice(cert2.as_bytes())
        .map(|d: rustls::pki_types::CertificateDer| d.to_vec())
        .unwrap();
    assert_eq!(fresh.peer_cert, new_der);
    assert!(
        Client::connect(addr, &ca.cert_pem).await.is_err(),
        "old cert still served"
    );

    // The connection opened before the swap still works.
    let r = c
        .post_json(&review_for(
            &pod(json!({})),
            "uid-43",
            "admission.k8s.io/v1",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], true);

    // Garbage cert files are rejected; the current cert stays.
    rejected_after(&srv.cert_reloads, || {
        std::fs::write(&srv.cert, "not a cert").unwrap()
    })
    .await;
    assert!(Client::connect(addr, &other.cert_pem).await.is_ok());
}

/// `GET /metrics` counts every `POST /inject` once, under its outcome, with
/// the names Istio's control-plane dashboard reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_metrics_count_each_outcome() {
    let ca = TestCa::new("ca-metrics");
    let (cert, key) = ca.serving();
    let srv = TestServer::start(&cert, &key, "", limits()).await;
    let mut c = Client::connect(srv.addr, &ca.cert_pem).await.unwrap();
    let v1 = "admission.k8s.io/v1";
    let r = c.post_json(&review_for(&pod(json!({})), "u-1", v1)).await;
    assert!(r["response"]["patch"].is_string(), "{r}");
    let off = json!({"sidecar.istio.io/inject": "false"});
    let r = c.post_json(&review_for(&pod(off), "u-2", v1)).await;
    assert!(r["response"]["patch"].is_null(), "{r}");
    let bad = json!({"traffic.sidecar.istio.io/excludeInboundPorts": "70000"});
    let r = c.post_json(&review_for(&pod(bad), "u-3", v1)).await;
    assert_eq!(r["response"]["allowed"], false, "{r}");
    let (status, _) = c
        .request("POST", "/inject", Some("text/plain"), b"{}".to_vec())
        .await;
    assert_eq!(status, 415);

    let (status, body) = c.request("GET", "/metrics", None, vec![]).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    for line in [
        "sidecar_injection_requests_total 4",
        "sidecar_injection_success_total 1",
        "sidecar_injection_skip_total 1",
        "sidecar_injection_failure_total 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}

/// Sends `head` over a fresh TLS connection, then `body_bytes` of chunked body in
/// the background, and returns the start of the response.
async fn raw_exchange(srv: &TestServer, ca_pem: &str, head: Vec<u8>, body_bytes: usize) -> String {
    let connector = tokio_rustls::TlsConnector::from(common::net::client_config(&[ca_pem]));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    wr.write_all(&head).await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
        for _ in 0..body_bytes / (64 * 1024) {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut out = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    writer.abort();
    String::from_utf8_lossy(&out[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_status_codes() {
    let ca = TestCa::new("ca");
    let (cert, key) = ca.serving();
    let srv = TestServer::start(&cert, &key, "", limits()).await;
    let mut c = Client::connect(srv.addr, &ca.cert_pem).await.unwrap();
    let json = Some("application/json");

    // Over 6 MiB, declared or streamed: 413 (raw TLS, since the server answers
    // before the client has finished writing).
    let declared = format!("POST /inject HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", 6 * 1024 * 1024 + 1);
    assert!(raw_exchange(&srv, &ca.cert_pem, declared.into_bytes(), 0)
        .await
        .starts_with("HTTP/1.1 413"));
    let chunked = b"POST /inject HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let got = raw_exchange(&srv, &ca.cert_pem, chunked, 7 * 1024 * 1024).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert_eq!(c.request("POST", "/inject", json, vec![]).await.0, 400);
    assert_eq!(
        c.request("POST", "/inject", Some("text/plain"), b"{}".to_vec())
            .await
            .0,
        415
    );
    assert_eq!(
        c.request("POST", "/inject", None, b"{}".to_vec()).await.0,
        415
    );
    let ok_ct = c
        .request(
            "POST",
            "/inject",
            Some("application/json; charset=utf-8"),
            b"{".to_vec(),
        )
        .await;
    assert_eq!(ok_ct.0, 200);
    let v: Value = serde_json::from_slice(&ok_ct.1).unwrap();
    assert_eq!(v["response"]["allowed"], false);
    assert!(v["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("not JSON"));

    let svc = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "s", "kind": {"kind": "Service"}, "object": {"kind": "Service"}}});
    let r = c.post_json(&svc).await;
    assert_eq!(
        (
            r["response"]["uid"].as_str(),
            r["response"]["allowed"].as_bool()
        ),
        (Some("s"), Some(false))
    );
    assert!(r["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("Service"));

    let bad = pod(json!({"traffic.sidecar.istio.io/excludeInboundPorts": "70000"}));
    let r = c
        .post_json(&review_for(&bad, "b", "admission.k8s.io/v1"))
        .await;
    let msg = r["response"]["status"]["message"].as_str().unwrap();
    assert_eq!(r["response"]["allowed"], false);
    assert!(
        msg.contains("traffic.sidecar.istio.io/excludeInboundPorts") && msg.contains("70000"),
        "{msg}"
    );
    assert!(r["response"].get("patch").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let ca = TestCa::new("ca");
    let (cert, key) = ca.serving();
    let srv = TestServer::start(&cert, &key, "", limits()).await;

    // Never finishing the TLS handshake: the server closes the socket.
    let mut raw = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    raw.write_all(b"\x16\x03\x01").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "handshake not timed out: {n:?}"
    );

    // Headers that never end, then a body that never arrives, over TLS.
    let connector = tokio_rustls::TlsConnector::from(common::net::client_config(&[&ca.cert_pem]));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "header read not timed out");

    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\"")
        .await
        .unwrap();
    let mut out = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&out[..n])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_config_reload_keeps_last_good() {
    let ca = TestCa::new("ca");
    let (cert, key) = ca.serving();
    let srv = TestServer::start(&cert, &key, "images: {proxy: reg/mesh:1}\n", limits()).await;
    let addr = srv.addr;
    let ca_pem = ca.cert_pem.clone();
    let image_now = move || {
        let ca_pem = ca_pem.clone();
        async move {
            let mut c = Client::connect(addr, &ca_pem).await.unwrap();
            let p = pod(json!({}));
            let r = c
                .post_json(&review_for(&p, "m", "admission.k8s.io/v1"))
                .await;
            proxy_image(&apply_response(&p, &r))
        }
    };
    assert_eq!(image_now().await.as_deref(), Some("reg/mesh:1"));
    write_atomically(&srv.mesh, "images: {proxy: reg/mesh:2}\n");
    let f = image_now.clone();
    eventually(
        "mesh config version 2 to be served",
        Duration::from_secs(5),
        || {
            let f = f.clone();
            async move { f().await.as_deref() == Some("reg/mesh:2") }
        },
    )
    .await;
    // Unknown field, then invalid value: both rejected, mesh:2 stays.
    for bad in [
        "images: {proxyy: reg/mesh:3}\n",
        "trustDomain: 'Not Valid'\nimages: {proxy: reg/mesh:3}\n",
    ] {
        rejected_after(&srv.mesh_reloads, || write_atomically(&srv.mesh, bad)).await;
        assert_eq!(image_now().await.as_deref(), Some("reg/mesh:2"));
    }
}

/// Runs `change`, then waits until the watcher has rejected one more version:
/// the positive signal that the bad file was looked at (and refused).
async fn rejected_after(stats: &Arc<ReloadStats>, change: impl FnOnce()) {
    let before = stats.rejected();
    change();
    let stats = stats.clone();
    eventually(
        "the changed file to be rejected",
        Duration::from_secs(5),
        || {
            let stats = stats.clone();
            async move { stats.rejected() > before }
        },
    )
    .await;
}

/// How Kubernetes updates a mounted ConfigMap: the new content appears at once.
fn write_atomically(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
