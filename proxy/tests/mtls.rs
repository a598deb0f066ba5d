//! Mutual TLS end to end: a real `mesh-agent` (files source + mesh CA with local
//! per-pod credentials) on the node, sidecars as UID 1337 that get their
//! certificates from it, echo apps as UID 1000. Proves on the wire that sidecars
//! speak TLS with Istio's ALPN (a raw listener captures the first bytes), that the
//! app sees XFCC, that metrics carry principals and `mutual_tls`, that STRICT
//! refuses a plaintext client that PERMISSIVE lets through, that DestinationRule
//! DISABLE sends plaintext, and that certificate rotation under load loses nothing.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use common::*;
use mesh_e2e::bins::workspace_bin;

const SVC_VIP: &str = "10.96.0.20";
const SINK_VIP: &str = "10.96.0.30";

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

fn pod_yaml(name: &str, ip: &str, sa: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: {v}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n{labels}spec:\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: echo\nstatus:\n  phase: Running\n  podIP: {ip}\n  conditions:\n  - type: Ready\n    status: \"True\"\n"
    )
}

const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: default\nspec:\n  clusterIP: 10.96.0.20\n  selector:\n    app: echo\n  ports:\n  - name: http\n    port: 8080\n    targetPort: 8080\n  - name: tcp-echo\n    port: 9000\n    targetPort: 9000\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: sink\n  namespace: default\nspec:\n  clusterIP: 10.96.0.30\n  selector:\n    app: sink\n  ports:\n  - name: http\n    port: 7000\n    targetPort: 7000\n";

const MESHED: (&str, &str) = ("security.istio.io/tlsMode", "istio");

/// A node with an agent (CA on), a meshed client, a meshed echo server, and
/// `plain` (no sidecar) plus `sink` (a raw listener posing as a meshed endpoint).
struct Mesh {
    config: ViewDir,
    _secrets: ViewDir,
    procs: Vec<PodProcess>,
    client: Pod,
    server: Pod,
    plain: Pod,
    sink: Pod,
    _node: Node,
}

impl Mesh {
    fn new(proxy_extra: &[&str]) -> Mesh {
        Mesh::with(&[], proxy_extra)
    }

    fn with(agent_extra: &[&str], proxy_extra: &[&str]) -> Mesh {
        let node = Node::new().unwrap();
        let client = node.add_pod("client-0", "default").unwrap();
        let server = node.add_pod("echo-v1-0", "default").unwrap();
        let plain = node.add_pod("plain-0", "default").unwrap();
        let sink = node.add_pod("sink-0", "default").unwrap();
        let config = ViewDir::new();
        let secrets = ViewDir::new();
        write(&config.0, "services.yaml", SERVICES);
        let ip = |p: &Pod| p.ip().to_string();
        write(
            &config.0,
            "pods.yaml",
            &[
                pod_yaml(
                    "client-0",
                    &ip(&client),
                    "client",
                    &[("app", "client"), MESHED],
                ),
                pod_yaml(
                    "echo-v1-0",
                    &ip(&server),
                    "echo",
                    &[("app", "echo"), ("version", "v1"), MESHED],
                ),
                pod_yaml("sink-0", &ip(&sink), "sink", &[("app", "sink"), MESHED]),
            ]
            .join("---\n"),
        );
        // Local credentials: the agent's list, and one token file per pod.
        write(
            &secrets.0,
            "ca-tokens",
            "tok-client-0 default client\ntok-echo-v1-0 default echo\n",
        );
        write(&secrets.0, "client-0.token", "tok-client-0\n");
        write(&secrets.0, "echo-v1-0.token", "tok-echo-v1-0\n");

        let agent = workspace_bin("mesh-agent");
        let agent_addr = format!("{}:15012", mesh_e2e::harness::GATEWAY);
        let tokens = secrets.0.join("ca-tokens");
        let root_out = secrets.0.join("root-cert.pem");
        let mut agent_argv = vec![
            agent.to_str().unwrap(),
            "--config-dir",
            config.0.to_str().unwrap(),
            "--listen",
            &agent_addr,
            "--debug-listen",
            "127.0.0.1:15014",
            "--debounce-ms",
            "20",
            "--ca-tokens",
            tokens.to_str().unwrap(),
            "--ca-root-out",
            root_out.to_str().unwrap(),
        ];
        agent_argv.extend_from_slice(agent_extra);
        let mut agent_proc = node.spawn(&agent_argv).unwrap();
        agent_proc
            .wait_for_line("mesh-agent listening", Duration::from_secs(10))
            .unwrap();
        // The root bundle is published as a file (local mode's istio-ca-root-cert).
        let root = std::fs::read_to_string(&root_out).unwrap();
        assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");

        let mut procs = vec![agent_proc];
        redirect(&server);
        procs.push(start_echo(&server, "v1"));
        procs.push(start_meshed_proxy(
            &server,
            "app=echo,version=v1",
            "echo",
            &agent_addr,
            &secrets.0.join("echo-v1-0.token"),
            &root_out,
            proxy_extra,
        ));
        redirect(&client);
        procs.push(start_meshed_proxy(
            &client,
            "app=client",
            "client",
            &agent_addr,
            &secrets.0.join("client-0.token"),
            &root_out,
            proxy_extra,
        ));
        Mesh {
            config,
            _secrets: secrets,
            procs,
            client,
            server,
            plain,
            sink,
            _node: node,
        }
    }
}

fn start_meshed_proxy(
    pod: &Pod,
    labels: &str,
    sa: &str,
    agent: &str,
    token: &Path,
    roots: &Path,
    extra: &[&str],
) -> PodProcess {
    let proxy = env!("CARGO_BIN_EXE_mesh-proxy");
    let ip = pod.ip().to_string();
    let mut argv = vec![
        proxy,
        "--pod",
        pod.name(),
        "--namespace",
        "default",
        "--service-account",
        sa,
        "--labels",
        labels,
        "--instance-ip",
        &ip,
        "--agent",
        agent,
        "--ca-token-file",
        token.to_str().unwrap(),
        // The agent's 15012 is TLS: verified against the published bundle.
        "--ca-root-file",
        roots.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    let mut p = pod.spawn(PROXY, &argv).unwrap();
    p.wait_for_line("mesh-proxy bound", Duration::from_secs(10))
        .unwrap();
    // Ready means: config applied and workload certificate installed.
    wait_ready(pod);
    p
}

/// An unlabelled counter's value.
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0.0)
}

fn admin_json(pod: &Pod, path: &str) -> serde_json::Value {
    let out = pod
        .exec(0, &["curl", "-s", &format!("http://127.0.0.1:15000{path}")])
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Runs `f` in a thread that joined `pod`'s network namespace (only that thread).
fn in_netns<T: Send + 'static>(
    pod: &Pod,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path: PathBuf = pod.netns_path();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// Listens on `port` in `pod` and returns the first bytes of the first connection.
fn capture_once(
    pod: &Pod,
    port: u16,
) -> (
    std::thread::JoinHandle<Vec<u8>>,
    std::sync::mpsc::Receiver<()>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_netns(pod, move || {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        // A ClientHello's record length tells when it is complete; plaintext HTTP ends its head with CRLFCRLF.
        while got < buf.len() {
            match c.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            if got >= 5 && buf[0] == 0x16 {
                if got >= 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]])) {
                    break;
                }
            } else if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        buf.truncate(got);
        buf
    });
    (h, rx)
}

/// What a meshed client's sidecar puts on the wire towards the sink service.
fn wire_bytes(m: &Mesh) -> Vec<u8> {
    let (h, ready) = capture_once(&m.sink, 7000);
    ready.recv().unwrap();
    // curl fails (the sink never answers HTTP); only the bytes matter.
    let _ = m.client.exec(
        APP,
        &[
            "curl",
            "-s",
            "--max-time",
            "3",
            &format!("http://{SINK_VIP}:7000/"),
        ],
    );
    h.join().unwrap()
}

#[test]
fn sidecars_speak_mtls_with_xfcc_principals_and_peer_authentication() {
    let mut m = Mesh::new(&["--access-log", "json"]);
    let t0 = Instant::now();

    // 1. On the wire: a TLS ClientHello offering Istio's HTTP/1.1 ALPN, not HTTP.
    let bytes = wire_bytes(&m);
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
    let r = curl_echo(&m.client, &[&format!("http://{SVC_VIP}:8080/hello")]);
    assert_eq!(r.pod, "echo-v1-0");
    let xfcc = r.headers.get("x-forwarded-client-cert").expect("XFCC");
    let re = regex::Regex::new(
        r#"^By=spiffe://cluster\.local/ns/default/sa/echo;Hash=[0-9a-f]{64};Subject="";URI=spiffe://cluster\.local/ns/default/sa/client$"#,
    )
    .unwrap();
    assert!(re.is_match(xfcc), "{xfcc}");
    // The server sidecar's access log names the verified peer.
    let line = m.procs[2]
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
        &m.client,
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
    let echoed = in_netns(&m.client, || {
        let mut s = TcpStream::connect((SVC_VIP, 9000)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"ping over mtls\n").unwrap();
        let mut buf = [0u8; 15];
        s.read_exact(&mut buf).unwrap();
        buf.to_vec()
    })
    .join()
    .unwrap();
    assert_eq!(echoed, b"ping over mtls\n");

    // 3. Metrics: the destination reports mutual_tls and the proven principals.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(&m.server);
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
    let certs = admin_json(&m.client, "/certs");
    assert_eq!(
        certs["identity"],
        "spiffe://cluster.local/ns/default/sa/client"
    );

    // 4. PERMISSIVE (the default): a pod without a sidecar gets through in plaintext,
    // and the app sees no XFCC, the metrics say "none".
    let plain_url = format!("http://{}:8080/", m.server.ip());
    let r = curl_echo(&m.plain, &[&plain_url]);
    assert!(!r.headers.contains_key("x-forwarded-client-cert"), "{r:?}");
    let text = metrics(&m.server);
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
            &m.plain,
            &["-o", "/dev/null", "-w", "%{http_code}", &plain_url],
        );
        if !out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "STRICT never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        let out = curl(&m.plain, &[&plain_url]);
        assert!(!out.status.success(), "plaintext got through under STRICT");
    }
    let r = curl_echo(&m.client, &[&format!("http://{SVC_VIP}:8080/")]);
    assert_eq!(r.pod, "echo-v1-0");
    let refused = counter(&metrics(&m.server), "mesh_inbound_plaintext_refused_total");
    assert!(refused >= 5.0, "{refused}");
    // A TLS client that is not a sidecar (no mesh certificate) is refused too.
    let out = m
        .plain
        .exec(
            APP,
            &[
                "curl",
                "-sk",
                "--max-time",
                "3",
                "--http1.1",
                &format!("https://{}:8080/", m.server.ip()),
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
            &m.plain,
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
        let bytes = wire_bytes(&m);
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
    let m = Mesh::new(&["--cert-ttl", "4s"]);
    let first = admin_json(&m.server, "/certs");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // New TCP connections keep making fresh mTLS handshakes through the rotations.
    let st = stop.clone();
    let tcp = in_netns(&m.client, move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            let r = (|| -> std::io::Result<()> {
                let mut s = TcpStream::connect((SVC_VIP, 9000))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"rotate\n")?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf)?;
                if &buf != b"rotate\n" {
                    return Err(std::io::Error::other("wrong echo"));
                }
                Ok(())
            })();
            match r {
                Ok(()) => ok += 1,
                Err(e) => failed.push(e.to_string()),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, failed)
    });
    // HTTP load over the pooled connections at the same time.
    let out = m
        .client
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
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (tcp_ok, tcp_failed) = tcp.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .expect("h2load summary");
    let num = |what: &str| -> u64 {
        let re = regex::Regex::new(&format!(r"(\d+) {what}")).unwrap();
        re.captures(line).unwrap()[1].parse().unwrap()
    };
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap();
    eprintln!(
        "rotation: http {line} | {codes} | tcp ok={tcp_ok} failed={}",
        tcp_failed.len()
    );
    assert!(num("succeeded") > 500, "{line}");
    assert_eq!(num("failed"), 0, "{line}");
    assert_eq!(num("errored"), 0, "{line}");
    assert_eq!(num("timeout"), 0, "{line}");
    assert!(
        codes.contains(&format!("{} 2xx", num("succeeded"))),
        "{codes}"
    );
    assert!(tcp_failed.is_empty(), "{tcp_failed:?}");
    assert!(tcp_ok > 100, "{tcp_ok}");
    // Both sides really rotated several times during the run.
    for pod in [&m.client, &m.server] {
        let c = admin_json(pod, "/certs");
        assert!(c["rotations"].as_u64().unwrap() >= 4, "{c}");
    }
    let last = admin_json(&m.server, "/certs");
    assert!(
        last["notAfter"].as_u64() > first["notAfter"].as_u64(),
        "{first} {last}"
    );
}

/// A CA certificate (self-signed root, or under `parent`) for the `cacerts` folder.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
    key: String,
}

impl TestCa {
    fn new(name: &str, parent: Option<&TestCa>) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, name);
        let cert = match parent {
            None => p.self_signed(&key).unwrap(),
            Some(parent) => p.signed_by(&key, &parent.issuer).unwrap(),
        };
        TestCa {
            pem: cert.pem(),
            key: key.serialize_pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// SHA-256 of the certificate, as the proxies' /certs shows it.
    fn sha(&self) -> String {
        mesh_proxy::mtls::cert_hash(pem::parse(&self.pem).unwrap().contents())
    }
}

/// Waits until both sidecars' /certs satisfy `f`.
fn until_certs(m: &Mesh, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for pod in [&m.client, &m.server] {
        loop {
            let c = admin_json(pod, "/certs");
            if f(&c) {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: {} has {c}", pod.name());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn sorted(v: &serde_json::Value) -> Vec<String> {
    let mut l: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    l.sort();
    l
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
    let m = Mesh::with(
        &["--ca-dir", &dir, "--ca-reload-ms", "200"],
        &["--cert-ttl", "4s"],
    );
    until_certs(&m, "old root only", |c| {
        sorted(&c["rootSha256"]) == [old.sha()]
    });
    let t0 = Instant::now();
    const LOAD_SECS: u64 = 25;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // New TCP connections (fresh mTLS handshakes) all through the rotation.
    let st = stop.clone();
    let tcp = in_netns(&m.client, move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            let r = (|| -> std::io::Result<()> {
                let mut s = TcpStream::connect((SVC_VIP, 9000))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"rotate\n")?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf)?;
                if &buf != b"rotate\n" {
                    return Err(std::io::Error::other("wrong echo"));
                }
                Ok(())
            })();
            match r {
                Ok(()) => ok += 1,
                Err(e) => failed.push(e.to_string()),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, failed)
    });
    // HTTP load over pooled connections at the same time, bounded in time.
    let load = std::thread::scope(|scope| {
        let client = &m.client;
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
            &format!("{}{}", old.pem, new.pem),
        );
        let both = {
            let mut v = vec![old.sha(), new.sha()];
            v.sort();
            v
        };
        until_certs(&m, "step 1: old + new roots trusted", |c| {
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
            &format!("{}{}", inter.pem, new.pem),
        );
        until_certs(&m, "step 2: leaves from the intermediate", |c| {
            c["chainSha256"][0] == inter.sha().as_str() && sorted(&c["rootSha256"]) == both
        });
        let t2 = t0.elapsed();
        // Step 3: the old root is removed.
        write(&cacerts.0, "root-cert.pem", &new.pem);
        until_certs(&m, "step 3: new root only", |c| {
            sorted(&c["rootSha256"]) == [new.sha()] && c["chainSha256"][0] == inter.sha().as_str()
        });
        let t3 = t0.elapsed();
        // Keep traffic flowing on the final state for a renewal or two.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            t0.elapsed() < Duration::from_secs(LOAD_SECS - 2),
            "the rotation outlasted the load ({t1:?} {t2:?} {t3:?})"
        );
        let out = http.join().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, t1, t2, t3)
    });
    let (out, t1, t2, t3) = load;
    let (tcp_ok, tcp_failed) = tcp.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("h2load summary: {text}"));
    let num = |what: &str| -> u64 {
        let re = regex::Regex::new(&format!(r"(\d+) {what}")).unwrap();
        re.captures(line).unwrap()[1].parse().unwrap()
    };
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap();
    eprintln!(
        "root rotation: steps done at {t1:?} {t2:?} {t3:?} | http {line} | {codes} | tcp ok={tcp_ok} failed={}",
        tcp_failed.len()
    );
    assert!(num("succeeded") > 500, "{line}");
    assert_eq!(num("failed"), 0, "{line}");
    assert_eq!(num("errored"), 0, "{line}");
    assert_eq!(num("timeout"), 0, "{line}");
    assert!(
        codes.contains(&format!("{} 2xx", num("succeeded"))),
        "{codes}"
    );
    assert!(tcp_failed.is_empty(), "{tcp_failed:?}");
    assert!(tcp_ok > 100, "{tcp_ok}");
    // Final state: leaves from the intermediate, chained to the new root only.
    for pod in [&m.client, &m.server] {
        let c = admin_json(pod, "/certs");
        assert_eq!(sorted(&c["rootSha256"]), [new.sha()], "{c}");
        assert_eq!(
            sorted(&c["chainSha256"]),
            {
                let mut v = vec![inter.sha(), new.sha()];
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
        let out = m
            .plain
            .exec(
                APP,
                &[
                    "sh",
                    "-c",
                    &format!(
                        "openssl s_client -connect {}:8080 -tls1_3 -alpn istio-http/1.1 -CAfile {} </dev/null 2>&1",
                        m.server.ip(),
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
