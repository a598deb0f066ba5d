//! Mutual TLS end to end: a real `mesh-agent` (files source + mesh CA with local
//! per-pod credentials) on the node, sidecars as UID 1337 that get their
//! certificates from it, echo apps as UID 1000. Proves on the wire that sidecars
//! speak TLS with Istio's ALPN (a raw listener captures the first bytes), that the
//! app sees XFCC, that metrics carry principals and `mutual_tls`, that STRICT
//! refuses a plaintext client that PERMISSIVE lets through, that DestinationRule
//! DISABLE sends plaintext, and that certificate rotation under load loses nothing.
//! A sidecar that holds its certificate reconnects to the agent with it (no
//! token needed any more).
//!
//! The tests are here (a test's name is its module path); their helpers are in
//! `mtls_support/`: `fixtures.rs` (the node, its services, counters), `wire.rs`
//! (capturing a sidecar's first bytes) and `certs.rs` (`/certs` during rotations).

mod common;
mod meshnet;

#[path = "mtls_support/fixtures.rs"]
mod fixtures;

#[path = "mtls_support/wire.rs"]
mod wire;

#[path = "mtls_support/certs.rs"]
mod certs;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use certs::{sha, sorted, until_certs};
use common::*;
use fixtures::{counter, mesh, SVC_VIP};
use mesh_e2e::testca::TestCa;
use meshnet::*;
use wire::wire_bytes;

#[test]
fn sidecars_speak_mtls_with_xfcc_principals_and_peer_authentication() {
    let mut m = mesh(&[], &["--access-log", "json"]);
    let [server, client, plain, sink] = &m.pods[..] else {
        unreachable!()
    };
    let t0 = Instant::now();

    // 1. On the wire: a TLS ClientHello offering Istio's HTTP/1.1 ALPN, not HTTP.
    let bytes = wire_bytes(client, sink);
    assert_eq!(
        bytes.first(),
        Some(&0x16),
        "not TLS: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    let alpn = mesh_proxy::sni::alpn(&bytes).expect("a complete ClientHello");
    assert_eq!(alpn, vec![b"istio-http/1.1".to_vec()]);
    assert_eq!(
        mesh_proxy::sni::parse(&bytes).as_deref(),
        Some("outbound_.7000_._.sink.default.svc.cluster.local")
    );

    // 2. The app behind the server sidecar sees XFCC naming the client.
    let r = curl_echo(client, &[&format!("http://{SVC_VIP}:8080/hello")]);
    assert_eq!(r.pod, "echo-v1-0");
    let xfcc = r.headers.get("x-forwarded-client-cert").expect("XFCC");
    let re = regex::Regex::new(
        r#"^By=spiffe://cluster\.local/ns/default/sa/echo;Hash=[0-9a-f]{64};Subject="";URI=spiffe://cluster\.local/ns/default/sa/client$"#,
    )
    .unwrap();
    assert!(re.is_match(xfcc), "{xfcc}");
    // The server sidecar's access log names the verified peer.
    let line = m.procs[0][1]
        .wait_for_line(
            r#""downstream_peer_uri_san":"spiffe://cluster.local/ns/default/sa/client""#,
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        line.contains(r#""connection_security_policy":"mutual_tls""#),
        "{line}"
    );
    // A client cannot forge XFCC: the server sidecar replaces it.
    let r = curl_echo(
        client,
        &[
            &format!("http://{SVC_VIP}:8080/"),
            "-H",
            "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/kube-system/sa/admin",
        ],
    );
    assert!(
        !r.headers["x-forwarded-client-cert"].contains("kube-system"),
        "{r:?}"
    );
    // TCP is mTLS too (ALPN istio): the echo comes back.
    in_netns(client, || tcp_echo_once(SVC_VIP, 9000))
        .join()
        .unwrap()
        .expect("TCP echo over mTLS");

    // 3. Metrics: the destination reports mutual_tls and the proven principals.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(server);
        let http = metric_sum(
            &text,
            "istio_requests_total",
            &[
                "reporter=\"destination\"",
                "source_principal=\"spiffe://cluster.local/ns/default/sa/client\"",
                "destination_principal=\"spiffe://cluster.local/ns/default/sa/echo\"",
                "connection_security_policy=\"mutual_tls\"",
            ],
        );
        let tcp = metric_sum(
            &text,
            "istio_tcp_connections_closed_total",
            &[
                "source_principal=\"spiffe://cluster.local/ns/default/sa/client\"",
                "connection_security_policy=\"mutual_tls\"",
            ],
        );
        if http >= 2.0 && tcp >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "http={http} tcp={tcp}\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let certs = admin_json(client, "/certs");
    assert_eq!(
        certs["identity"],
        "spiffe://cluster.local/ns/default/sa/client"
    );

    // 4. PERMISSIVE (the default): a pod without a sidecar gets through in plaintext,
    // and the app sees no XFCC, the metrics say "none".
    let plain_url = format!("http://{}:8080/", server.ip());
    let r = curl_echo(plain, &[&plain_url]);
    assert!(!r.headers.contains_key("x-forwarded-client-cert"), "{r:?}");
    let text = metrics(server);
    assert!(
        metric_sum(
            &text,
            "istio_requests_total",
            &[
                "source_principal=\"unknown\"",
                "connection_security_policy=\"none\""
            ]
        ) >= 1.0,
        "{text}"
    );

    // 5. STRICT: the plaintext client is refused; the meshed client still works.
    write(
        &m.config.0,
        "pa.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = curl(
            plain,
            &["-o", "/dev/null", "-w", "%{http_code}", &plain_url],
        );
        if !out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "STRICT never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        let out = curl(plain, &[&plain_url]);
        assert!(!out.status.success(), "plaintext got through under STRICT");
    }
    let r = curl_echo(client, &[&format!("http://{SVC_VIP}:8080/")]);
    assert_eq!(r.pod, "echo-v1-0");
    let refused = counter(&metrics(server), "mesh_inbound_plaintext_refused_total");
    assert!(refused >= 5.0, "{refused}");
    // A TLS client that is not a sidecar (no mesh certificate) is refused too.
    let out = plain
        .exec(
            APP,
            &[
                "curl",
                "-sk",
                "--max-time",
                "3",
                "--http1.1",
                &format!("https://{}:8080/", server.ip()),
            ],
        )
        .unwrap();
    assert!(!out.status.success());

    // 6. Port-level PERMISSIVE under a STRICT workload policy.
    write(
        &m.config.0,
        "pa-port.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: echo\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: echo\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    \"8080\":\n      mode: PERMISSIVE\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = curl(
            plain,
            &["-o", "/dev/null", "-w", "%{http_code}", &plain_url],
        );
        if out.status.success() && out.stdout == b"200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "port-level PERMISSIVE never applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // 7. DestinationRule DISABLE: the same call goes out in plaintext.
    write(
        &m.config.0,
        "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: sink\n  namespace: default\nspec:\n  host: sink.default.svc.cluster.local\n  trafficPolicy:\n    tls:\n      mode: DISABLE\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bytes = wire_bytes(client, sink);
        if bytes.starts_with(b"GET / HTTP/1.1\r\n") {
            break;
        }
        assert_eq!(
            bytes.first(),
            Some(&0x16),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(Instant::now() < deadline, "DISABLE never applied");
    }
    eprintln!("mtls e2e body took {:?}", t0.elapsed());
    drop(m.procs);
}

#[test]
fn rotation_under_load_loses_no_request() {
    // 4 s certificates: each sidecar renews about every 2 s.
    let m = mesh(&[], &["--cert-ttl", "4s"]);
    let [server, client, ..] = &m.pods[..] else {
        unreachable!()
    };
    let first = admin_json(server, "/certs");
    let stop = Arc::new(AtomicBool::new(false));
    // New TCP connections keep making fresh mTLS handshakes through the rotations.
    let tcp = tcp_echo_loop(client, stop.clone());
    // HTTP load over the pooled connections at the same time.
    let out = client
        .exec(
            APP,
            &[
                "h2load",
                "--h1",
                "-c",
                "4",
                "-D",
                "9",
                &format!("http://{SVC_VIP}:8080/"),
            ],
        )
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (tcp_ok, tcp_failed) = tcp.join().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let h = H2load::clean(&out);
    eprintln!(
        "rotation: http {} | {} | tcp ok={tcp_ok} failed={}",
        h.line,
        h.codes,
        tcp_failed.len()
    );
    assert!(h.succeeded > 500, "{}", h.line);
    assert!(tcp_failed.is_empty(), "{tcp_failed:?}");
    assert!(tcp_ok > 100, "{tcp_ok}");
    // Both sides really rotated several times during the run.
    for pod in [client, server] {
        let c = admin_json(pod, "/certs");
        assert!(c["rotations"].as_u64().unwrap() >= 4, "{c}");
    }
    let last = admin_json(server, "/certs");
    assert!(
        last["notAfter"].as_u64() > first["notAfter"].as_u64(),
        "{first} {last}"
    );
}

#[test]
fn root_rotation_in_three_steps_loses_no_request() {
    let (old, new) = (TestCa::new("old-root", None), TestCa::new("new-root", None));
    let inter = TestCa::new("new-intermediate", Some(&new));
    let cacerts = ViewDir::new();
    write(&cacerts.0, "ca-cert.pem", &old.pem);
    write(&cacerts.0, "ca-key.pem", &old.key);
    write(&cacerts.0, "root-cert.pem", &old.pem);
    write(&cacerts.0, "cert-chain.pem", &old.pem);
    let dir = cacerts.0.to_str().unwrap().to_string();
    // 4 s leaves: each sidecar renews about every 2 s; the folder is polled every 200 ms.
    let m = mesh(
        &["--ca-dir", &dir, "--ca-reload-ms", "200"],
        &["--cert-ttl", "4s"],
    );
    let [server, client, plain, ..] = &m.pods[..] else {
        unreachable!()
    };
    until_certs([client, server], "old root only", |c| {
        sorted(&c["rootSha256"]) == [sha(&old)]
    });
    let t0 = Instant::now();
    const LOAD_SECS: u64 = 25;
    let stop = Arc::new(AtomicBool::new(false));
    // New TCP connections (fresh mTLS handshakes) all through the rotation.
    let tcp = tcp_echo_loop(client, stop.clone());
    // HTTP load over pooled connections at the same time, bounded in time.
    let load = std::thread::scope(|scope| {
        let http = scope.spawn(move || {
            client
                .exec(
                    APP,
                    &[
                        "h2load",
                        "--h1",
                        "-c",
                        "4",
                        "-D",
                        &LOAD_SECS.to_string(),
                        &format!("http://{SVC_VIP}:8080/"),
                    ],
                )
                .unwrap()
        });
        std::thread::sleep(Duration::from_secs(1));

        // Step 1: root-cert.pem = old + new, the old root still signs.
        write(
            &cacerts.0,
            "root-cert.pem",
            format!("{}{}", old.pem, new.pem),
        );
        let both = {
            let mut v = vec![sha(&old), sha(&new)];
            v.sort();
            v
        };
        until_certs([client, server], "step 1: old + new roots trusted", |c| {
            sorted(&c["rootSha256"]) == both
        });
        let t1 = t0.elapsed();
        // Step 2: the signer switches to an intermediate under the new root; the
        // files are written one by one, so the agent may see a half-written folder.
        write(&cacerts.0, "ca-cert.pem", &inter.pem);
        write(&cacerts.0, "ca-key.pem", &inter.key);
        write(
            &cacerts.0,
            "cert-chain.pem",
            format!("{}{}", inter.pem, new.pem),
        );
        until_certs(
            [client, server],
            "step 2: leaves from the intermediate",
            |c| c["chainSha256"][0] == sha(&inter).as_str() && sorted(&c["rootSha256"]) == both,
        );
        let t2 = t0.elapsed();
        // Step 3: the old root is removed.
        write(&cacerts.0, "root-cert.pem", &new.pem);
        until_certs([client, server], "step 3: new root only", |c| {
            sorted(&c["rootSha256"]) == [sha(&new)] && c["chainSha256"][0] == sha(&inter).as_str()
        });
        let t3 = t0.elapsed();
        // Keep traffic flowing on the final state for a renewal or two.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            t0.elapsed() < Duration::from_secs(LOAD_SECS - 2),
            "the rotation outlasted the load ({t1:?} {t2:?} {t3:?})"
        );
        let out = http.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        (out, t1, t2, t3)
    });
    let (out, t1, t2, t3) = load;
    let (tcp_ok, tcp_failed) = tcp.join().unwrap();
    let h = H2load::clean(&out);
    eprintln!(
        "root rotation: steps done at {t1:?} {t2:?} {t3:?} | http {} | {} | tcp ok={tcp_ok} failed={}",
        h.line,
        h.codes,
        tcp_failed.len()
    );
    assert!(h.succeeded > 500, "{}", h.line);
    assert!(tcp_failed.is_empty(), "{tcp_failed:?}");
    assert!(tcp_ok > 100, "{tcp_ok}");
    // Final state: leaves from the intermediate, chained to the new root only.
    for pod in [client, server] {
        let c = admin_json(pod, "/certs");
        assert_eq!(sorted(&c["rootSha256"]), [sha(&new)], "{c}");
        assert_eq!(
            sorted(&c["chainSha256"]),
            {
                let mut v = vec![sha(&inter), sha(&new)];
                v.sort();
                v
            },
            "{c}"
        );
    }
    // On the wire (openssl offering Istio's ALPN): the server sidecar's chain
    // verifies against the new root alone and not against the old one.
    let new_pem = cacerts.0.join("new-root-only.pem");
    let old_pem = cacerts.0.join("old-root-only.pem");
    write(&cacerts.0, "new-root-only.pem", &new.pem);
    write(&cacerts.0, "old-root-only.pem", &old.pem);
    let verify = |ca: &Path| {
        let out = plain
            .exec(
                APP,
                &[
                    "sh",
                    "-c",
                    &format!(
                        "openssl s_client -connect {}:8080 -tls1_3 -alpn istio-http/1.1 -CAfile {} </dev/null 2>&1",
                        server.ip(),
                        ca.display()
                    ),
                ],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // (The sidecar then wants a client certificate; only its own chain matters here.)
    let good = verify(&new_pem);
    assert!(
        good.contains("Certificate chain") && good.contains("Verify return code: 0 (ok)"),
        "{good}"
    );
    let bad = verify(&old_pem);
    assert!(
        bad.contains("Certificate chain") && !bad.contains("Verify return code: 0 (ok)"),
        "{bad}"
    );
}

/// A sidecar with its certificate reconnects to a restarted agent with it:
/// the tokens file no longer knows the sidecar's token, so only the
/// certificate can authenticate the new subscription.
#[test]
fn sidecar_reconnects_to_the_agent_with_its_certificate() {
    // A CA that survives the agent's restart.
    let root = TestCa::new("mesh-root", None);
    let cacerts = ViewDir::new();
    root.write_cacerts(&cacerts.0);
    let agent_extra = ["--ca-dir", cacerts.0.to_str().unwrap()];
    let mut m = MeshNet::with(ECHO_SERVICE, &[ECHO], &agent_extra, &[]);
    let series = |auth: &str| format!("mesh_agent_subscriptions_total{{auth=\"{auth}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let certs = admin_json(&m.pods[0], "/certs");
        let metrics = m.agent_get("/metrics");
        let synced =
            counter(&metrics, &series("token")) + counter(&metrics, &series("certificate")) >= 1.0;
        if certs["identity"] == "spiffe://cluster.local/ns/default/sa/echo" && synced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate or subscription: {certs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    write(&m.files.0, "ca-tokens", "");
    m.restart_agent();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = m.agent_get("/metrics");
        if counter(&metrics, &series("certificate")) >= 1.0 {
            assert_eq!(counter(&metrics, &series("token")), 0.0, "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate-authenticated subscription: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let z: serde_json::Value = serde_json::from_str(&m.agent_get("/debug/syncz")).unwrap();
    assert_eq!(z["proxies"].as_array().map(Vec::len), Some(1), "{z}");
}
