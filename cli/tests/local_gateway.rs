//! `meshctl local` gateways, host ports and Secrets: the ingress and egress
//! gateway pods of Istio's demo profile (injected with the `gateway` template,
//! no capture, subscribed to the agent), the ingress Service's ports published
//! on the host's loopback through the forwarder, `service-url`, and Secrets
//! accepted by `up`/`apply`/`delete` for the agent, never printed.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Two echo replicas behind a NodePort Service (published) and a ClusterIP one.
const APPS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: example/web
        ports: [{containerPort: 8080}, {containerPort: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: inner, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
";

const TLS_SECRET: &str = "\
apiVersion: v1
kind: Secret
metadata: {name: shop-cert, namespace: istio-system}
type: kubernetes.io/tls
stringData:
  tls.crt: CERTIFICATE-BYTES-ONE
  tls.key: PRIVATE-KEY-BYTES-ONE
---
apiVersion: v1
kind: Secret
metadata: {name: shop-cert-cacert, namespace: istio-system}
data: {cacert: Q0EtQllURVM=}
";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `service-url` for one port, as `127.0.0.1:PORT`.
fn url(mesh: &Local, svc: &str, ns: &str, port: &str) -> String {
    mesh.ok(&["service-url", svc, "-n", ns, "--port", port])
        .trim()
        .to_string()
}

/// GET from the host through a published port (curl, one connection per call).
fn host_get(addr: &str, path: &str) -> (u16, Option<EchoReply>) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n@@%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once("\n@@").unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), serde_json::from_str(body).ok())
}

#[test]
fn ingress_and_egress_gateways_like_istios_demo_profile() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    let up = mesh.ok(&["up", "--gateways", "ingress,egress", "-f", &apps]);
    assert!(
        up.contains("pod/istio-ingressgateway-0 (istio-system)")
            && up.contains("pod/istio-egressgateway-0 (istio-system)"),
        "{up}"
    );
    // `up` prints the ingress addresses (and the test app's NodePort).
    let line = up
        .lines()
        .find(|l| l.contains("service istio-system/istio-ingressgateway published"))
        .unwrap_or_else(|| panic!("{up}"));
    for p in ["15021 → 127.0.0.1:", "80 → 127.0.0.1:", "443 → 127.0.0.1:"] {
        assert!(line.contains(p), "{line}");
    }
    assert!(!up.contains("istio-egressgateway published"), "{up}");

    let pods = mesh.ok(&["pods"]);
    for gw in ["istio-ingressgateway-0", "istio-egressgateway-0"] {
        let l = pods.lines().find(|l| l.contains(gw)).unwrap();
        assert!(
            l.starts_with("istio-system") && l.contains("Running") && l.ends_with("istio-proxy"),
            "{pods}"
        );
    }

    // The injector's gateway template: `mesh-proxy router`, the Istio labels and
    // service account, no istio-init / istio-validation.
    let pod_file = mesh
        .root
        .join(&mesh.name)
        .join("config/pods/istio-system_istio-ingressgateway-0.yaml");
    let pod: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&pod_file).unwrap()).unwrap();
    assert_eq!(pod["spec"]["containers"][0]["name"], "istio-proxy");
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["router"])
    );
    assert!(pod["spec"]["initContainers"].is_null(), "{pod:#}");
    assert_eq!(
        pod["spec"]["serviceAccountName"],
        "istio-ingressgateway-service-account"
    );
    assert_eq!(pod["metadata"]["labels"]["istio"], "ingressgateway");
    assert_eq!(pod["metadata"]["labels"]["app"], "istio-ingressgateway");
    // No capture in a gateway pod (CNI mode): its listeners take traffic as is.
    let nat = mesh.exec(
        "istio-system/istio-ingressgateway-0",
        Some(0),
        &["iptables-save", "-t", "nat"],
    );
    assert!(nat.status.success(), "{}", text(&nat));
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(!nat.contains("ISTIO_"), "{nat}");

    // Subscribed to the agent with its own token, as sidecars are.
    let status = mesh.ok(&["proxy-status"]);
    for gw in ["istio-ingressgateway-0", "istio-egressgateway-0"] {
        let l = status.lines().find(|l| l.contains(gw));
        assert!(
            l.is_some_and(|l| l.contains("istio-system") && l.contains("SYNCED")),
            "{status}"
        );
    }

    // The status port through the published host port: the gateway's readiness.
    let lines = mesh.ok(&["service-url", "istio-ingressgateway", "-n", "istio-system"]);
    let ports: Vec<&str> = lines
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ports, ["15021", "80", "443"], "{lines}");
    let status_addr = url(&mesh, "istio-ingressgateway", "istio-system", "15021");
    assert_eq!(host_get(&status_addr, "/healthz/ready").0, 200);

    // The egress gateway is ClusterIP: nothing on the host.
    let out = mesh.meshctl(&["service-url", "istio-egressgateway", "-n", "istio-system"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("service istio-system/istio-egressgateway has no ports published"),
        "{}",
        text(&out)
    );
}

#[test]
fn published_ports_service_url_and_secrets_without_gateways() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    let secrets = mesh.file("secrets.yaml", TLS_SECRET);
    let up = mesh.ok(&["up", "--gateways", "none", "-f", &apps, "-f", &secrets]);
    assert!(!up.contains("istio-ingressgateway"), "{up}");
    assert!(!mesh.ok(&["pods"]).contains("istio-system"));
    // Secrets: named with type and keys, never their bytes.
    assert!(
        up.contains(
            "secret/shop-cert (istio-system) configured, type kubernetes.io/tls, keys [tls.crt, tls.key]"
        ) && up.contains("secret/shop-cert-cacert (istio-system) configured, type Opaque, keys [cacert]"),
        "{up}"
    );
    assert!(!up.contains("KEY-BYTES") && !up.contains("Q0Et"), "{up}");

    // service-url errors: exit code 1 and one line naming the value.
    let out = mesh.meshctl(&["service-url", "istio-ingressgateway", "-n", "istio-system"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no service \"istio-ingressgateway\" in namespace istio-system"),
        "{}",
        text(&out)
    );
    let out = mesh.meshctl(&["service-url", "inner", "-n", "shop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("shop/inner has no ports published"),
        "{}",
        text(&out)
    );
    let out = mesh.meshctl(&["service-url", "web", "-n", "shop", "--port", "8080"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no published port 8080 (published: 80)"),
        "{}",
        text(&out)
    );

    // From the host, 127.0.0.1:HOSTPORT reaches both replicas (one connection per call).
    let addr = url(&mesh, "web", "shop", "80");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..8 {
        let (code, reply) = host_get(&addr, &format!("/hello?call={i}"));
        assert_eq!(code, 200);
        let r = reply.expect("echo reply");
        assert_eq!(
            (r.path.as_str(), r.local.ends_with(":8080")),
            ("/hello", true)
        );
        seen.insert(r.pod);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // A raw TCP stream both ways (request out, answer back, shutdown seen).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /raw HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.contains("\"/raw\""),
        "{answer}"
    );

    // Re-applying the Service with another port keeps the first host port.
    // The new port names its nodePort: that is its host port.
    let node_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let two_ports = mesh.file(
        "web2.yaml",
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n  type: LoadBalancer\n  selector: {{app: web}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n  - {{name: http-alt, port: 81, targetPort: 9090, nodePort: {node_port}}}\n"),
    );
    let out = mesh.ok(&["apply", "-f", &two_ports]);
    assert!(
        out.contains(&format!("port 81 on 127.0.0.1:{node_port}")),
        "{out}"
    );
    assert_eq!(url(&mesh, "web", "shop", "80"), addr);
    let alt = url(&mesh, "web", "shop", "81");
    assert_eq!(alt, format!("127.0.0.1:{node_port}"));
    let (code, reply) = host_get(&alt, "/alt");
    assert_eq!(code, 200);
    assert!(reply.unwrap().local.ends_with(":9090"));
    assert_eq!(host_get(&addr, "/again").0, 200);

    // Secrets: a changed one is rewritten for the agent (root-only file), a
    // tls Secret without tls.key is refused whole, delete removes it.
    let file = mesh
        .root
        .join(&mesh.name)
        .join("config/secrets/istio-system_shop-cert.yaml");
    let before = std::fs::read_to_string(&file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let rotated = mesh.file("rotated.yaml", &TLS_SECRET.replace("-ONE", "-TWO"));
    let out = mesh.ok(&["apply", "-f", &rotated]);
    assert!(!out.contains("BYTES-TWO"), "{out}");
    let after = std::fs::read_to_string(&file).unwrap();
    assert_ne!(before, after);
    // base64 of "PRIVATE-KEY-BYTES-TWO": stored as the API server stores it.
    assert!(after.contains("UFJJVkFURS1LRVktQllURVMtVFdP"), "{after}");
    let bad = mesh.file(
        "bad.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: broken, namespace: istio-system}\ntype: kubernetes.io/tls\nstringData: {tls.crt: CERT}\n",
    );
    let out = mesh.meshctl(&["apply", "-f", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad.yaml (document 1): Secret istio-system/broken")
            && stderr(&out).contains("data[tls.key]: Required value"),
        "{}",
        text(&out)
    );
    assert!(!file.with_file_name("istio-system_broken.yaml").exists());
    let out = mesh.ok(&["delete", "-f", &secrets]);
    assert!(
        out.contains("secret/shop-cert (istio-system) deleted"),
        "{out}"
    );
    assert!(!file.exists());

    // Deleting the Service closes its host ports; `down` stops the forwarder.
    mesh.ok(&["delete", "-f", &two_ports]);
    assert!(TcpStream::connect(&alt).is_err());
    assert!(TcpStream::connect(&addr).is_err());
    mesh.ok(&["apply", "-f", &apps]);
    let addr = url(&mesh, "web", "shop", "80");
    assert_eq!(host_get(&addr, "/back").0, 200);
    mesh.ok(&["down"]);
    assert!(TcpStream::connect(&addr).is_err());
}
