//! DestinationRule SIMPLE/MUTUAL TLS origination end to end, shaped like Istio's
//! egress TLS origination example: the app sends plain HTTP to an external
//! host's port 80 (a ServiceEntry whose port 80 targets 443), and a
//! DestinationRule's port-level settings for port 80 make the sidecar originate
//! TLS. The "external" server is a TLS-only rustls server in a pod without a
//! sidecar, with its own test CA; it records the SNI, the client certificate,
//! each decrypted request line, failed handshakes, and any plaintext that
//! reaches it (so a leak would be seen, not just a failed request).

mod common;
mod meshnet;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use mesh_e2e::testca::TestCa;
use meshnet::*;

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Request {
        port: u16,
        sni: Option<String>,
        client: Option<String>,
        line: String,
    },
    Handshake(String),
    Plaintext(String),
}

type Events = Arc<Mutex<Vec<Event>>>;

fn subject_cn(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.subject().to_string()
}

/// Serves TLS only on `port` inside `pod` until `stop`; records what it sees.
fn tls_server(
    pod: &Pod,
    port: u16,
    config: Arc<rustls::ServerConfig>,
    events: Events,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_netns(pod, move || {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let mut s = match l.accept() {
                Ok((s, _)) => s,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut first = [0u8; 1];
            if s.peek(&mut first).unwrap_or(0) == 0 {
                continue;
            }
            if first[0] != 0x16 {
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                events.lock().unwrap().push(Event::Plaintext(text));
                continue;
            }
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            let failed = loop {
                match tls.read(&mut buf) {
                    Ok(0) => break Some("closed before a request".to_string()),
                    Ok(n) => {
                        head.extend_from_slice(&buf[..n]);
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            break None;
                        }
                    }
                    Err(e) => break Some(e.to_string()),
                }
            };
            if let Some(e) = failed {
                events.lock().unwrap().push(Event::Handshake(e));
                continue;
            }
            let sni = tls.conn.server_name().map(str::to_string);
            let client = tls
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| subject_cn(c));
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let body = format!("tls port={port} sni={sni:?} client={client:?}\n");
            events.lock().unwrap().push(Event::Request {
                port,
                sni,
                client,
                line,
            });
            let _ = tls.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    rx.recv().unwrap();
    h
}

const SERVICES: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: external\n  namespace: default\nspec:\n  hosts: [api.external.test]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n  - {number: 80, name: http, protocol: HTTP, targetPort: 443}\n  endpoints:\n  - address: EXT_IP\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: external-mtls\n  namespace: default\nspec:\n  hosts: [mtls.external.test]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n  - {number: 80, name: http, protocol: HTTP, targetPort: 8443}\n  endpoints:\n  - address: EXT_IP\n";

fn dr(name: &str, host: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  host: {host}\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 80}}\n      tls:\n{tls}"
    )
}

struct World {
    m: MeshNet,
    events: Events,
    stop: Arc<AtomicBool>,
    servers: Vec<std::thread::JoinHandle<()>>,
    ext_ip: String,
    /// Set once a DestinationRule applies: from then on plaintext is a leak.
    rule: std::cell::Cell<bool>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.servers.drain(..) {
            let _ = h.join();
        }
    }
}

impl World {
    /// Writes DestinationRule `name` for `host` with `tls` as port 80's TLS
    /// settings (replacing the previous version of that rule).
    fn set_tls(&self, name: &str, host: &str, tls: &str) {
        write(
            &self.m.config.0,
            &format!("dr-{name}.yaml"),
            dr(name, host, tls),
        );
    }

    fn get(&self, host: &str, path: &str) -> (String, String) {
        let resolve = format!("{host}:80:{}", self.ext_ip);
        status(
            self.m.pod("client-0"),
            &["--resolve", &resolve, &format!("http://{host}{path}")],
        )
    }
    /// Polls until `host` answers `code` with `needle` in the body (a config
    /// change has applied).
    fn until(&self, host: &str, code: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (c, body) = self.get(host, "/poll");
            if c == code && body.contains(needle) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{host} never answered {code}: last {c} {body}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn take(&self) -> Vec<Event> {
        let ev = std::mem::take(&mut *self.events.lock().unwrap());
        if self.rule.get() {
            let leaked: Vec<_> = ev
                .iter()
                .filter(|e| matches!(e, Event::Plaintext(_)))
                .collect();
            assert!(
                leaked.is_empty(),
                "plaintext reached the server: {leaked:?}"
            );
        }
        ev
    }
}

#[test]
fn simple_and_mutual_origination_to_an_external_tls_server() {
    let t0 = Instant::now();
    let specs = [
        CLIENT,
        PodSpec {
            name: "ext-0",
            pod_sa: "default",
            token_sa: None,
            labels: &[("app", "ext")],
        },
    ];
    // The ServiceEntry needs the external pod's address: start with no services,
    // then write them once the pod exists.
    let m = MeshNet::new("", &specs, &[]);
    let ext_ip = m.pod("ext-0").ip().to_string();
    write(
        &m.config.0,
        "services.yaml",
        SERVICES.replace("EXT_IP", &ext_ip),
    );

    // Test PKI: the server's CA, an unrelated CA, and a client CA for MUTUAL.
    let server_ca = TestCa::new("origin server CA", None);
    let other_ca = TestCa::new("unrelated CA", None);
    let client_ca = TestCa::new("origin client CA", None);
    let srv = server_ca.leaf(
        "external server",
        &["api.external.test", "mtls.external.test"],
        false,
    );
    let (srv_der, srv_key) = (srv.cert_der, srv.key_der);
    let cli = client_ca.leaf("origin-client", &[], true);
    let (cli_pem, cli_key_pem) = (cli.cert_pem, cli.key_pem);
    write(&m.files.0, "server-ca.pem", &server_ca.pem);
    write(&m.files.0, "other-ca.pem", &other_ca.pem);
    write(&m.files.0, "client.pem", &cli_pem);
    write(&m.files.0, "client-key.pem", &cli_key_pem);
    write(&m.files.0, "garbage.pem", "not a certificate\n");
    let files = m.files.0.clone();
    let f = |n: &str| files.join(n).to_str().unwrap().to_string();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![rustls::pki_types::CertificateDer::from(srv_der)];
    let key = || {
        rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
            srv_key.clone(),
        ))
    };
    let simple = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key())
        .unwrap();
    let mut client_roots = rustls::RootCertStore::empty();
    for c in pem::parse_many(&client_ca.pem).unwrap() {
        client_roots.add(c.into_contents().into()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(client_roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mutual = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key())
        .unwrap();
    let events: Events = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ext = m.pod("ext-0");
    let servers = vec![
        tls_server(ext, 443, Arc::new(simple), events.clone(), stop.clone()),
        tls_server(ext, 8443, Arc::new(mutual), events.clone(), stop.clone()),
    ];
    let mut w = World {
        m,
        events,
        stop,
        servers,
        ext_ip,
        rule: std::cell::Cell::new(false),
    };

    // 0. Control: without a DestinationRule the app's plain HTTP reaches the
    // TLS-only server as plaintext, and the server records it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = w.get("api.external.test", "/no-rule");
        if w.take()
            .iter()
            .any(|e| matches!(e, Event::Plaintext(t) if t.starts_with("GET /no-rule HTTP/1.1")))
        {
            break;
        }
        assert!(Instant::now() < deadline, "plaintext never seen");
    }

    // 1. SIMPLE with the server's CA: TLS with the host as SNI, no plaintext.
    let ca_file = f("server-ca.pem");
    w.set_tls(
        "api",
        "api.external.test",
        &format!("        mode: SIMPLE\n        caCertificates: {ca_file}\n"),
    );
    // The MUTUAL rule for the other host goes in now too (checked in step 5).
    let (cc, ck) = (f("client.pem"), f("client-key.pem"));
    w.set_tls("mtls", "mtls.external.test", &format!("        mode: MUTUAL\n        caCertificates: {ca_file}\n        clientCertificate: {cc}\n        privateKey: {ck}\n"));
    w.until(
        "api.external.test",
        "200",
        "sni=Some(\"api.external.test\")",
    );
    w.until("mtls.external.test", "200", "CN=origin-client");
    // Requests sent while the rule was on its way went out as plaintext.
    let _ = std::mem::take(&mut *w.events.lock().unwrap());
    w.rule.set(true);
    for i in 0..5 {
        let (c, body) = w.get("api.external.test", &format!("/simple/{i}"));
        assert_eq!(c, "200", "{body}");
        assert!(body.contains("sni=Some(\"api.external.test\")"), "{body}");
    }
    let ev = w.take();
    assert_eq!(ev.len(), 5, "{ev:?}");
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(
            *e,
            Event::Request {
                port: 443,
                sni: Some("api.external.test".into()),
                client: None,
                line: format!("GET /simple/{i} HTTP/1.1"),
            }
        );
    }

    // 2. The wrong CA: 503 and nothing reaches the server but failed handshakes.
    let other = f("other-ca.pem");
    w.set_tls(
        "api",
        "api.external.test",
        &format!("        mode: SIMPLE\n        caCertificates: {other}\n"),
    );
    w.until("api.external.test", "503", "");
    w.take();
    for _ in 0..3 {
        assert_eq!(w.get("api.external.test", "/wrong-ca").0, "503");
    }
    let ev = w.take();
    assert!(!ev.is_empty(), "no handshake attempted");
    assert!(
        ev.iter().all(|e| matches!(e, Event::Handshake(_))),
        "{ev:?}"
    );
    // Flagged as an upstream connection failure (UF, URX,UF after retries).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(w.m.pod("client-0"));
        let uf = |flags: &str| {
            metric_sum(
                &text,
                "istio_requests_total",
                &[
                    "destination_service=\"api.external.test\"",
                    "response_code=\"503\"",
                    &format!("response_flags=\"{flags}\""),
                ],
            )
        };
        if uf("UF") + uf("URX,UF") >= 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // 3. subjectAltNames: a mismatch is refused; a match passes (SNI unchanged).
    w.set_tls("api", "api.external.test", &format!("        mode: SIMPLE\n        caCertificates: {ca_file}\n        subjectAltNames: [other.external.test]\n"));
    w.until("api.external.test", "503", "");
    w.take();
    assert_eq!(w.get("api.external.test", "/san-mismatch").0, "503");
    let ev = w.take();
    assert!(
        ev.iter().all(|e| matches!(e, Event::Handshake(_))),
        "{ev:?}"
    );
    w.set_tls("api", "api.external.test", &format!("        mode: SIMPLE\n        caCertificates: {ca_file}\n        subjectAltNames: [mtls.external.test]\n        sni: mtls.external.test\n"));
    w.until(
        "api.external.test",
        "200",
        "sni=Some(\"mtls.external.test\")",
    );

    // 4. insecureSkipVerify accepts the server despite the wrong CA.
    w.set_tls("api", "api.external.test", &format!(
                "        mode: SIMPLE\n        caCertificates: {other}\n        insecureSkipVerify: true\n"
            ));
    w.until(
        "api.external.test",
        "200",
        "sni=Some(\"api.external.test\")",
    );

    // 5. MUTUAL: the server that demands a client certificate sees ours.
    let body = w.until("mtls.external.test", "200", "");
    assert!(body.contains("client=Some(\"CN=origin-client\")"), "{body}");
    w.take();
    assert_eq!(w.get("mtls.external.test", "/mutual").0, "200");
    assert!(
        w.take().iter().any(|e| matches!(e, Event::Request { port: 8443, client: Some(c), line, .. } if c == "CN=origin-client" && line == "GET /mutual HTTP/1.1")),
    );

    // 6. MUTUAL without a client certificate is refused by validation.
    write(
        &w.m.config.0,
        "dr-bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: bad\n  namespace: default\nspec:\n  host: bad.external.test\n  trafficPolicy:\n    tls:\n      mode: MUTUAL\n",
    );
    w.m.agent
        .wait_for_line(
            "mode MUTUAL needs clientCertificate and privateKey",
            Duration::from_secs(10),
        )
        .unwrap();

    // 7. Unusable files: that cluster answers 503 with a log line naming the
    // file; the other cluster keeps working, the proxy keeps running.
    let garbage = f("garbage.pem");
    w.set_tls(
        "api",
        "api.external.test",
        &format!("        mode: SIMPLE\n        caCertificates: {garbage}\n"),
    );
    w.until("api.external.test", "503", "");
    let line =
        w.m.sidecar(0)
            .wait_for_line("TLS origination settings unusable", Duration::from_secs(5))
            .unwrap();
    assert!(line.contains(&garbage), "{line}");
    assert!(line.contains("outbound|80||api.external.test"), "{line}");
    // ... and a counter of settings the proxy applied but decided against.
    let m = metrics(w.m.pod("client-0"));
    assert!(
        m.lines()
            .filter_map(|l| l.strip_prefix("mesh_proxy_config_warnings_total "))
            .any(|v| v.parse::<f64>().is_ok_and(|n| n >= 1.0)),
        "{m}"
    );
    assert_eq!(w.get("mtls.external.test", "/still-fine").0, "200");
    w.take();
    assert_eq!(w.get("api.external.test", "/bad-file").0, "503");
    assert!(
        w.take().is_empty(),
        "a request went out with unusable settings"
    );

    // No plaintext ever reached the server once a rule was in place.
    w.take();
    eprintln!("origination e2e took {:?}", t0.elapsed());
}
