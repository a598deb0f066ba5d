//! The whole discovery path: a real `mesh-agent` runs on the node (in the node's
//! namespace, on the bridge address) over a folder of plain Kubernetes YAML
//! (Service + Pods with their IPs, as a kubelet reports them); the proxies
//! subscribe with `--agent` and carry traffic by what the agent sent. Scaling the
//! Deployment (a new Pod document) changes where requests go. The standalone
//! `--config-dir` mode (embedded agent) carries the same traffic.

mod common;

use std::collections::BTreeMap;

use common::*;

const SVC_VIP: &str = "10.96.0.20";

fn versions(client: &Pod, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = curl_echo(client, &[&format!("http://{SVC_VIP}:8080/")]);
        *seen.entry(r.version.unwrap_or_default()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn proxies_follow_a_real_agent_over_kubernetes_yaml() {
    let node = Node::new().unwrap();
    let client = node.add_pod("client-0", "default").unwrap();
    let v1 = node.add_pod("echo-v1-0", "default").unwrap();
    let v2 = node.add_pod("echo-v2-0", "default").unwrap();
    let dir = ViewDir::new();
    write(&dir.0, "service.yaml", ECHO_SERVICE);
    write(
        &dir.0,
        "client.yaml",
        pod_yaml(
            "client-0",
            &client.ip().to_string(),
            "default",
            &[("app", "client")],
        ),
    );
    write(
        &dir.0,
        "echo-v1.yaml",
        pod_yaml(
            "echo-v1-0",
            &v1.ip().to_string(),
            "default",
            &[("app", "echo"), ("version", "v1")],
        ),
    );

    let listen = agent_addr();
    let _agent = start_agent(&node, &dir.0, &[]);

    let mut procs = Vec::new();
    for (pod, version) in [(&v1, "v1"), (&v2, "v2")] {
        redirect(pod);
        procs.push(start_echo(pod, version));
        procs.push(start_proxy_with(
            pod,
            &format!("app=echo,version={version}"),
            &["--agent", &listen],
        ));
    }
    redirect(&client);
    procs.push(start_proxy_with(
        &client,
        "app=client",
        &["--agent", &listen],
    ));

    // Only v1's Pod is known to the agent: every call lands there.
    assert_eq!(
        versions(&client, 10),
        BTreeMap::from([("v1".to_string(), 10)])
    );

    // "Scale up": the kubelet reports a second Pod; the agent picks it up and pushes.
    write(
        &dir.0,
        "echo-v2.yaml",
        pod_yaml(
            "echo-v2-0",
            &v2.ip().to_string(),
            "default",
            &[("app", "echo"), ("version", "v2")],
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = versions(&client, 10);
        if seen.contains_key("v2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new endpoint never received traffic: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The agent tracks every proxy's ACK (what `meshctl proxy-status` shows).
    let syncz = agent_syncz(&node);
    let proxies = syncz["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 3, "{syncz}");
    assert!(proxies.iter().all(|p| p["status"] == "SYNCED"), "{syncz}");
}

#[test]
fn standalone_config_dir_mode_embeds_the_agent() {
    let node = Node::new().unwrap();
    let client = node.add_pod("client-0", "default").unwrap();
    let v1 = node.add_pod("echo-v1-0", "default").unwrap();
    let dir = ViewDir::new();
    write(
        &dir.0,
        "all.yaml",
        format!(
            "{ECHO_SERVICE}---\n{}",
            pod_yaml(
                "echo-v1-0",
                &v1.ip().to_string(),
                "default",
                &[("app", "echo"), ("version", "v1")]
            )
        ),
    );
    redirect(&v1);
    let _echo = start_echo(&v1, "v1");
    let d = dir.0.to_str().unwrap();
    let _p1 = start_proxy_with(&v1, "app=echo,version=v1", &["--config-dir", d]);
    redirect(&client);
    let _p2 = start_proxy_with(&client, "app=client", &["--config-dir", d]);
    let r = curl_echo(
        &client,
        &[&format!("http://{SVC_VIP}:8080/"), "-H", "host: echo"],
    );
    assert_eq!(r.pod, "echo-v1-0");
    assert!(r.peer.starts_with("127.0.0.6:"));
    // Short names resolve by Host as cluster DNS would.
    let m = metrics(&client);
    assert!(
        m.contains("destination_service=\"echo.default.svc.cluster.local\""),
        "{m}"
    );
}

/// Echo v1 in `default` behind [`SVC_VIP`], a client sidecar in `front`, both
/// following an agent with `--visibility on-demand` (the client with
/// `client_flags` too). Returns what must live.
fn on_demand_world(client_flags: &[&str]) -> (Node, Pod, Vec<PodProcess>, ViewDir, Pod) {
    let node = Node::new().unwrap();
    let client = node.add_pod("client-0", "front").unwrap();
    let v1 = node.add_pod("echo-v1-0", "default").unwrap();
    let dir = ViewDir::new();
    write(&dir.0, "service.yaml", ECHO_SERVICE);
    write(
        &dir.0,
        "echo-v1.yaml",
        pod_yaml(
            "echo-v1-0",
            &v1.ip().to_string(),
            "default",
            &[("app", "echo"), ("version", "v1")],
        ),
    );
    let listen = agent_addr();
    let mut procs = vec![start_agent(&node, &dir.0, &["--visibility", "on-demand"])];
    redirect(&v1);
    procs.push(start_echo(&v1, "v1"));
    procs.push(start_proxy_with(
        &v1,
        "app=echo,version=v1",
        &["--agent", &listen],
    ));
    redirect(&client);
    let mut flags = vec!["--agent", listen.as_str()];
    flags.extend_from_slice(client_flags);
    procs.push(start_proxy_in(
        &client,
        "client-0",
        "front",
        "app=client",
        &flags,
    ));
    // The echo pod lives as long as the caller holds it (its netns goes with it).
    (node, client, procs, dir, v1)
}

const ECHO_HOST: &str = "echo.default.svc.cluster.local";

fn config_dump(client: &Pod) -> String {
    client
        .exec(0, &["curl", "-s", "http://127.0.0.1:15000/config_dump"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn source_requests_to_echo(client: &Pod) -> bool {
    metrics(client).lines().any(|l| {
        l.starts_with("istio_requests_total")
            && l.contains("reporter=\"source\"")
            && l.contains(&format!("destination_service=\"{ECHO_HOST}\""))
    })
}

/// On-demand discovery end to end: the agent runs `--visibility on-demand`; a
/// client sidecar in namespace `front` does not have `echo.default` in its
/// view (namespace scope) until its first call to the Service VIP, which waits
/// for the lookup and is then served as a mesh call (the client's own
/// `istio_requests_total` names the service), not passed through.
#[test]
fn on_demand_a_call_to_another_namespace_is_a_mesh_call_from_the_first_request() {
    let (_node, client, _procs, _dir, _echo) = on_demand_world(&[]);
    assert!(!config_dump(&client).contains(ECHO_HOST));
    let r = curl_echo(&client, &[&format!("http://{SVC_VIP}:8080/")]);
    assert_eq!(r.version.as_deref(), Some("v1"));
    assert!(config_dump(&client).contains(ECHO_HOST));
    assert!(source_requests_to_echo(&client), "{}", metrics(&client));
}

/// By host: a request to an address nobody knows, with `Host: echo.default`,
/// is looked up by its authority and routed to echo (as a ServiceEntry host
/// behind DNS would be).
#[test]
fn on_demand_a_request_naming_a_mesh_host_is_looked_up_by_its_authority() {
    let (_node, client, _procs, _dir, _echo) = on_demand_world(&[]);
    let r = curl_echo(
        &client,
        &[
            "-H",
            "Host: echo.default:8080",
            "http://10.96.0.99:8080/by-host",
        ],
    );
    assert_eq!(r.version.as_deref(), Some("v1"));
    assert!(config_dump(&client).contains(ECHO_HOST));
    assert!(source_requests_to_echo(&client), "{}", metrics(&client));
}

/// Ageing out end to end: with `--on-demand-idle 2s`, the service the client
/// looked up on its first call leaves its config dump once the client stops
/// calling it; the next call looks it up again and is a mesh call again.
#[test]
fn on_demand_an_unused_service_ages_out_and_a_new_call_looks_it_up_again() {
    let (_node, client, _procs, _dir, _echo) =
        on_demand_world(&["--on-demand-idle", "2s", "--on-demand-sweep", "200ms"]);
    let url = format!("http://{SVC_VIP}:8080/");
    assert!(!config_dump(&client).contains(ECHO_HOST));
    let r = curl_echo(&client, &[&url]);
    assert_eq!(r.version.as_deref(), Some("v1"));
    assert!(config_dump(&client).contains(ECHO_HOST));

    // A dump (not an empty answer) without the service: it aged out.
    until("echo aged out of the client's view", 20, || {
        let dump = config_dump(&client);
        (dump.contains("\"version\"") && !dump.contains(ECHO_HOST)).then_some(())
    });
    let before = requests_to_echo(&client);
    let r = curl_echo(&client, &[&url]);
    assert_eq!(r.version.as_deref(), Some("v1"));
    assert!(config_dump(&client).contains(ECHO_HOST));
    assert_eq!(
        requests_to_echo(&client),
        before + 1.0,
        "{}",
        metrics(&client)
    );
}

/// The client's `istio_requests_total` reported as source for echo.
fn requests_to_echo(client: &Pod) -> f64 {
    metric_sum(
        &metrics(client),
        "istio_requests_total",
        &[
            "reporter=\"source\"",
            &format!("destination_service=\"{ECHO_HOST}\""),
        ],
    )
}
