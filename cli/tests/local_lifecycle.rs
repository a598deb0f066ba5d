//! `meshctl local` as a tool: namespaces without `istio-injection=enabled` get no
//! sidecar and still reach Service VIPs (kube-proxy's job, done in the node);
//! `REGISTRY_ONLY` blocks an unregistered host until a ServiceEntry opens it;
//! bad input is refused before anything is created, with the object named; and
//! `down` leaves nothing behind, also after an `up` that failed half-way;
//! `apply` to a mesh whose agent died is refused, saying so.

mod common;

use common::*;

const APPS: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio-injection: enabled}
---
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: web, version: v1}
    spec:
      containers:
      - name: web
        image: example/web
        ports:
        - {name: http, containerPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: outside, namespace: legacy}
spec:
  template:
    metadata:
      labels: {app: outside}
    spec:
      containers:
      - name: outside
        image: example/outside
        ports:
        - {containerPort: 8080}
";

const REGISTRY_ONLY: &str = "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n";

#[test]
fn registry_only_service_entries_and_uninjected_namespaces() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    let meshcfg = mesh.file("mesh.yaml", REGISTRY_ONLY);
    let up = mesh.ok(&[
        "up",
        "--mode",
        "init",
        "--mesh-config",
        &meshcfg,
        "-f",
        &apps,
    ]);
    assert!(
        up.contains("pod/outside-0 (legacy)") && up.contains("no sidecar"),
        "{up}"
    );
    let pods = mesh.ok(&["pods"]);
    let line = |name: &str| pods.lines().find(|l| l.contains(name)).unwrap().to_string();
    assert!(line("web-0").ends_with("istio-proxy"), "{pods}");
    assert!(line("outside-0").ends_with('-'), "{pods}");
    let outside_ip = line("outside-0")
        .split_whitespace()
        .nth(4)
        .unwrap()
        .to_string();

    // A pod without a sidecar reaches the Service VIP through the node's DNAT,
    // by named targetPort, over both replicas (one connection per call: the
    // DNAT picks an endpoint per connection, as kube-proxy does).
    let res = mesh.calls(
        "legacy/outside-0",
        "http://web.shop:80/",
        40,
        &["-H", "Connection: close"],
    );
    let pods_seen: std::collections::BTreeSet<String> = res
        .iter()
        .filter_map(|(_, r)| r.as_ref().map(|r| r.pod.clone()))
        .collect();
    assert_eq!(pods_seen.len(), 2, "{pods_seen:?}");

    // From the mesh, the unregistered host is blocked: 502 and NR.
    let url = format!("http://{outside_ip}:8080/");
    let blocked = mesh.calls("shop/web-0", &url, 3, &[]);
    assert!(
        blocked.iter().all(|(c, r)| *c == 502 && r.is_none()),
        "{blocked:?}"
    );
    let m = mesh.metrics("shop/web-0");
    assert!(
        metric_sum(
            &m,
            "istio_requests_total",
            &["response_code=\"502\"", "response_flags=\"NR\""]
        ) >= 3.0,
        "{m}"
    );

    // A ServiceEntry registers it (and its name resolves, as Istio's DNS proxy answers).
    let se = mesh.file(
        "se.yaml",
        &format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: partner\n  namespace: shop\nspec:\n  hosts: [partner.example.com]\n  addresses: [{outside_ip}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 8080, name: http, protocol: HTTP}}\n  endpoints:\n  - address: {outside_ip}\n"),
    );
    mesh.apply(&se, &["shop/web-0"]);
    let open = mesh.calls("shop/web-0", "http://partner.example.com:8080/", 3, &[]);
    assert!(
        open.iter()
            .all(|(c, r)| *c == 200 && r.as_ref().unwrap().pod == "outside-0"),
        "{open:?}"
    );
    let m = mesh.metrics("shop/web-0");
    assert!(
        metric_sum(
            &m,
            "istio_requests_total",
            &[
                "destination_service=\"partner.example.com\"",
                "response_code=\"200\""
            ]
        ) >= 3.0,
        "{m}"
    );
    // Deleting it closes the door again.
    mesh.change("delete", &se, &["shop/web-0"]);
    let blocked = mesh.calls("shop/web-0", &url, 1, &[]);
    assert_eq!(blocked[0].0, 502);
}

#[test]
fn bad_input_is_refused_before_anything_is_created() {
    let mesh = Local::new();
    let bad_vs = mesh.file(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: 150\n",
    );
    let out = mesh.meshctl(&["up", "-f", &sample("platform"), "-f", &bad_vs]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vs.yaml (document 1)") && err.contains("weight"),
        "{err}"
    );
    assert!(netns_left(&format!("ml-{}-", mesh.name)).is_empty());
    assert!(!mesh.root.join(&mesh.name).exists());

    let broken = mesh.file("broken.yaml", "kind: Deployment\nmetadata: {name: x}\n");
    let out = mesh.meshctl(&["up", "-f", &broken]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("broken.yaml (document 1): missing apiVersion"),
        "{err}"
    );

    // Commands on a mesh that does not exist say so.
    let out = mesh.meshctl(&["pods"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("meshctl local up"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_failed_up_is_undone_and_down_removes_everything() {
    let mesh = Local::new();
    // The second pod's annotation is invalid: injection fails after the first
    // pod is running. With --keep-on-error the half-built mesh stays for `down`.
    let apps = format!(
        "{APPS}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\n  namespace: shop\n  annotations:\n    traffic.sidecar.istio.io/includeOutboundIPRanges: not-a-cidr\nspec:\n  containers:\n  - {{name: app, image: x}}\n"
    );
    let file = mesh.file("apps.yaml", &apps);
    let out = mesh.meshctl(&["up", "--keep-on-error", "-f", &file]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shop/broken") && err.contains("not-a-cidr"),
        "{err}"
    );
    let prefix = format!("ml-{}-", mesh.name);
    assert!(
        netns_left(&prefix).len() >= 2,
        "the kept mesh has its node and pods"
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mesh.root.join(&mesh.name).join("state.json")).unwrap(),
    )
    .unwrap();
    let pids: Vec<u64> = state["pods"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["procs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["pid"].as_u64().unwrap())
        })
        .chain(state["agent"]["pid"].as_u64())
        .collect();
    assert!(pids.len() >= 5, "{state}");
    let netns: Vec<String> = state["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["netns"].as_str().unwrap().to_string())
        .collect();

    // With its agent gone, `apply` would push nothing: refused, saying why.
    let agent = state["agent"]["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), nix::sys::signal::SIGKILL).unwrap();
    let vs = mesh.file(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: shop}\n\
         spec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {host: web}\n",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        // SIGKILL is asynchronous: wait until the process is really gone.
        let out = mesh.meshctl(&["apply", "-f", &vs]);
        if !out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("mesh-agent") && err.contains("not running") && err.contains("nothing"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("configured"));

    let down = mesh.ok(&["down"]);
    assert!(down.contains("removed"), "{down}");
    assert!(netns_left(&prefix).is_empty(), "{:?}", netns_left(&prefix));
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        assert!(!alive, "process {pid} survived down");
    }
    for ns in netns {
        assert!(
            !std::path::Path::new("/etc/netns").join(&ns).exists(),
            "/etc/netns/{ns} left"
        );
    }
    assert!(!mesh.root.join(&mesh.name).exists());
    // A second down is harmless.
    assert!(mesh.ok(&["down"]).contains("nothing to remove"));

    // Without --keep-on-error, the same failure removes what was created.
    let out = mesh.meshctl(&["up", "-f", &file]);
    assert!(!out.status.success());
    assert!(netns_left(&prefix).is_empty());
    assert!(!mesh.root.join(&mesh.name).exists());
}
