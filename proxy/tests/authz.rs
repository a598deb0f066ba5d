//! AuthorizationPolicy and local rate limiting end to end: a real `mesh-agent`
//! on the node reads a folder of Kubernetes YAML (Service, Pods,
//! AuthorizationPolicies); the proxies subscribe to it; policies are written,
//! changed and removed while traffic flows, and each outcome is asserted with a
//! real request from a client pod through both sidecars.

mod common;

use common::*;

const SVC_VIP: &str = "10.96.0.30";

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: default\nspec:\n  clusterIP: 10.96.0.30\n  selector:\n    app: echo\n  ports:\n  - name: http\n    port: 8080\n    targetPort: 8080\n  - name: tcp-echo\n    port: 9000\n    targetPort: 9000\n";

/// An AuthorizationPolicy document selecting the echo workload.
fn policy(name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: echo\n{spec}"
    )
}

struct Mesh {
    dir: ViewDir,
    server_proxy: PodProcess,
    _procs: Vec<PodProcess>,
    clients: Vec<Pod>,
    server: Pod,
    _node: Node,
}

/// Two meshed clients and one meshed echo server, all following a real agent.
fn mesh(server_flags: &[&str]) -> Mesh {
    let node = Node::new().unwrap();
    let clients: Vec<Pod> = (0..2)
        .map(|i| node.add_pod(&format!("client-{i}"), "default").unwrap())
        .collect();
    let server = node.add_pod("echo-v1-0", "default").unwrap();
    let dir = ViewDir::new();
    write(&dir.0, "service.yaml", SERVICE);
    for c in &clients {
        write(
            &dir.0,
            &format!("{}.yaml", c.name()),
            pod_yaml(
                c.name(),
                &c.ip().to_string(),
                "client",
                &[("app", "client")],
            ),
        );
    }
    write(
        &dir.0,
        "echo.yaml",
        pod_yaml(
            server.name(),
            &server.ip().to_string(),
            "echo",
            &[("app", "echo")],
        ),
    );
    let listen = agent_addr();
    let agent_proc = start_agent(&node, &dir.0, &[]);
    let mut procs = vec![agent_proc];
    redirect(&server);
    procs.push(start_echo(&server, "v1"));
    let mut server_config = vec!["--agent", listen.as_str()];
    server_config.extend_from_slice(server_flags);
    let server_proxy = start_proxy_with(&server, "app=echo,version=v1", &server_config);
    for c in &clients {
        redirect(c);
        procs.push(start_proxy_with(c, "app=client", &["--agent", &listen]));
    }
    Mesh {
        dir,
        server_proxy,
        _procs: procs,
        clients,
        server,
        _node: node,
    }
}

/// `(status, body)` of a request from `client` to the echo service; extra curl args first.
fn call(client: &Pod, path: &str, args: &[&str]) -> (u16, String) {
    let url = format!("http://{SVC_VIP}:8080{path}");
    let mut argv = vec!["-w", "\n%{http_code}", "--path-as-is"];
    argv.extend_from_slice(args);
    argv.push(&url);
    let out = curl(client, &argv);
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn status(client: &Pod, path: &str, args: &[&str]) -> u16 {
    call(client, path, args).0
}

/// Polls (bounded) until `path` from client 0 answers `want`: a pushed policy took effect.
fn until(m: &Mesh, path: &str, args: &[&str], want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status(&m.clients[0], path, args);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} {args:?} still answers {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tcp_echo(client: &Pod) -> String {
    let script = format!("exec 3<>/dev/tcp/{SVC_VIP}/9000; echo ping >&3; read -r e <&3; echo $e");
    let out = client
        .exec(APP, &["timeout", "5", "bash", "-c", &script])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn authorization_policies_are_enforced_and_follow_live_changes() {
    let mut m = mesh(&["--access-log", "text"]);
    let c0 = &m.clients[0];
    let c1 = &m.clients[1];
    assert_eq!(status(c0, "/anything", &[]), 200, "no policy: all allowed");
    assert_eq!(tcp_echo(c0), "ping");

    // ALLOW by method and path: only matching requests get through.
    let allow = policy(
        "allow-read",
        "action: ALLOW\nrules:\n- to:\n  - operation:\n      methods: [GET]\n      paths: [\"/info*\", \"/public\"]\n",
    );
    write(&m.dir.0, "allow.yaml", &allow);
    until(&m, "/admin", &[], 403);
    let (code, body) = call(c0, "/admin", &[]);
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    let table: &[(&str, &[&str], u16)] = &[
        ("/info", &[], 200),
        ("/info/deep?q=1", &[], 200),
        ("/public", &[], 200),
        ("/public/x", &[], 403),
        ("/info", &["-X", "POST"], 403),
        ("/info", &["-X", "DELETE"], 403),
        ("/", &[], 403),
        // Normalization: the app gets, and the policy sees, the resolved path.
        ("/admin/../public", &[], 200),
        ("/info/../admin", &[], 403),
        ("/%69nfo", &[], 200),
        ("/info/%2e%2e/admin", &[], 403),
    ];
    for (path, args, want) in table {
        assert_eq!(status(c0, path, args), *want, "{path} {args:?}");
    }
    assert_eq!(
        status(c0, "/info%00x", &[]),
        400,
        "an encoded NUL is always refused"
    );
    let r: EchoReply = serde_json::from_str(&call(c0, "/admin/../public", &[]).1).unwrap();
    assert_eq!(r.path, "/public", "the app receives the normalized path");
    // TCP to an HTTP-only ALLOW: the rule cannot match, the connection is closed.
    assert_eq!(
        tcp_echo(c0),
        "",
        "TCP denied by an ALLOW with HTTP-only rules"
    );

    // DENY beats ALLOW, with a header condition.
    let deny = policy(
        "deny-flagged",
        "action: DENY\nrules:\n- to:\n  - operation:\n      paths: [\"/public\"]\n  when:\n  - key: request.headers[x-block]\n    values: [\"yes\", \"always-*\"]\n",
    );
    write(&m.dir.0, "deny.yaml", &deny);
    until(&m, "/public", &["-H", "x-block: yes"], 403);
    assert_eq!(status(c0, "/public", &["-H", "x-block: always-now"]), 403);
    assert_eq!(status(c0, "/public", &["-H", "x-block: no"]), 200);
    assert_eq!(status(c0, "/public", &[]), 200);

    // ipBlocks: only client-1's address is allowed.
    std::fs::remove_file(m.dir.0.join("deny.yaml")).unwrap();
    let by_ip = policy(
        "allow-read",
        &format!(
            "rules:\n- from:\n  - source:\n      ipBlocks: [\"{}/32\"]\n",
            c1.ip()
        ),
    );
    write(&m.dir.0, "allow.yaml", &by_ip);
    until(&m, "/public", &[], 403);
    assert_eq!(status(c1, "/anything", &[]), 200, "client-1 is in ipBlocks");
    assert_eq!(status(c0, "/anything", &[]), 403, "client-0 is not");
    assert_eq!(tcp_echo(c1), "ping", "ipBlocks apply to TCP too");
    assert_eq!(tcp_echo(c0), "");

    // ALLOW with no rules denies everything, from everyone.
    write(&m.dir.0, "allow.yaml", policy("allow-read", ""));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(c1, "/anything", &[]) != 403 {
        assert!(Instant::now() < deadline, "allow-nothing never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(c0, "/anything", &[]), 403);

    // Only a DENY on /admin: bypass attempts all fail, the rest is open.
    std::fs::remove_file(m.dir.0.join("allow.yaml")).unwrap();
    let deny_admin = policy(
        "deny-admin",
        "action: DENY\nrules:\n- to:\n  - operation:\n      paths: [\"/admin\", \"/admin/*\"]\n",
    );
    write(&m.dir.0, "deny.yaml", &deny_admin);
    until(&m, "/admin", &[], 403);
    for path in [
        "/admin/users",
        "/public/../admin",
        "//admin",
        "/%61dmin",
        "/public/%2e%2e/admin",
        "/./admin",
        "/admin/./x",
    ] {
        assert_eq!(
            status(c0, path, &[]),
            403,
            "{path} must not bypass the DENY"
        );
    }
    assert_eq!(status(c0, "/public", &[]), 200);
    assert_eq!(status(c0, "/administrator", &[]), 200);
    // On TCP, Istio ignores the HTTP-only fields of a DENY rule: it denies all TCP.
    assert_eq!(tcp_echo(c0), "", "a paths-only DENY closes TCP connections");

    // TCP DENY by port closes the connection; HTTP on 8080 unaffected.
    write(
        &m.dir.0,
        "deny.yaml",
        policy(
            "deny-tcp",
            "action: DENY\nrules:\n- to:\n  - operation:\n      ports: [\"9000\"]\n",
        ),
    );
    until(&m, "/admin", &[], 200);
    assert_eq!(tcp_echo(c0), "", "TCP to the denied port is closed");
    assert_eq!(tcp_echo(c1), "");

    // Removing the policy reopens everything, without restarting anything.
    std::fs::remove_file(m.dir.0.join("deny.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tcp_echo(c0) != "ping" {
        assert!(Instant::now() < deadline, "TCP never reopened");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Selection as Istio does it: a policy in the root namespace applies
    // mesh-wide; one in another namespace, or whose selector does not match, does not.
    let ap = |ns: &str, name: &str, body: &str| {
        format!("apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}")
    };
    write(
        &m.dir.0,
        "scoped.yaml",
        [
            ap("istio-system", "mesh-deny", "  action: DENY\n  rules:\n  - to:\n    - operation:\n        ports: [\"8080\"]\n        paths: [\"/mesh-denied\"]\n"),
            ap("other", "deny-all", "  action: DENY\n  rules:\n  - {}\n"),
            ap("default", "deny-unselected", "  selector:\n    matchLabels:\n      app: nomatch\n  action: DENY\n  rules:\n  - {}\n"),
        ]
        .join("---\n"),
    );
    until(&m, "/mesh-denied", &[], 403);
    assert_eq!(status(c0, "/fine", &[]), 200);
    assert_eq!(tcp_echo(c0), "ping", "neither deny-all applies here");
    std::fs::remove_file(m.dir.0.join("scoped.yaml")).unwrap();
    until(&m, "/mesh-denied", &[], 200);

    // Istio's telemetry of denials: 403 with no response flag, both reporters;
    // the access log carries Envoy's RBAC response code details.
    let sm = metrics(&m.server);
    let denied = metric_sum(
        &sm,
        "istio_requests_total",
        &[
            "reporter=\"destination\"",
            "response_code=\"403\"",
            "response_flags=\"-\"",
            "destination_workload=\"echo-v1\"",
        ],
    );
    assert!(
        denied >= 15.0,
        "403s recorded by the server: {denied}\n{sm}"
    );
    let cm = metrics(c0);
    assert!(
        metric_sum(
            &cm,
            "istio_requests_total",
            &["reporter=\"source\"", "response_code=\"403\""]
        ) >= 10.0,
        "{cm}"
    );
    m.server_proxy
        .wait_for_line(
            "403 - rbac_access_denied_matched_policy[none]",
            Duration::from_secs(5),
        )
        .unwrap();
    m.server_proxy
        .wait_for_line(
            "rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]-rule[0]]",
            Duration::from_secs(5),
        )
        .unwrap();
}

#[test]
fn local_rate_limit_answers_429_then_recovers() {
    let m = mesh(&["--local-rate-limit", "3/3s"]);
    let c0 = &m.clients[0];
    // The bucket starts full: three pass, then the limit answers (a refill may
    // land in between, so allow a few more before the first 429).
    let url = format!("http://{SVC_VIP}:8080/");
    let mut codes = vec![];
    let limited = loop {
        let out = curl(c0, &["-i", &url]);
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let code: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        codes.push(code);
        if code == 429 || codes.len() == 8 {
            break text;
        }
    };
    assert_eq!(&codes[..3], &[200, 200, 200], "{codes:?}");
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    assert!(limited.contains("x-local-rate-limit: true"), "{limited}");
    assert!(limited.ends_with("local_rate_limited"), "{limited}");
    // It refills after the interval, without a restart.
    let deadline = Instant::now() + Duration::from_secs(8);
    while status(c0, "/", &[]) != 200 {
        assert!(Instant::now() < deadline, "the bucket never refilled");
        std::thread::sleep(Duration::from_millis(200));
    }
    let sm = metrics(&m.server);
    let all_429 = metric_sum(
        &sm,
        "istio_requests_total",
        &["reporter=\"destination\"", "response_code=\"429\""],
    );
    let rl = metric_sum(
        &sm,
        "istio_requests_total",
        &[
            "reporter=\"destination\"",
            "response_code=\"429\"",
            "response_flags=\"RL\"",
        ],
    );
    assert!(rl >= 1.0 && rl == all_429, "429s carry flag RL: {sm}");
}
