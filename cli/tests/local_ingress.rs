//! Istio's ingress walkthrough on `meshctl local`, from the host: Bookinfo and
//! `bookinfo-gateway.yaml`, then `curl http://$(meshctl local service-url
//! istio-ingressgateway -n istio-system --port 80)/productpage` answered by
//! productpage and an unrouted path 404 (`NR` in the gateway's metrics); and
//! HTTPS terminated at the gateway with a `credentialName` Secret applied with
//! `meshctl local apply`, rotated by applying it again. These need a working
//! `mesh-proxy router` and the agent's Gateway compiler.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const GATEWAY: &str = "istio-system/istio-ingressgateway-0";

fn bookinfo_with_gateway() -> Local {
    let (platform, rules, gateway) = (
        sample("platform"),
        sample("networking/destination-rule-all.yaml"),
        sample("networking/bookinfo-gateway.yaml"),
    );
    Local::up(&[
        "--gateways",
        "ingress",
        "-f",
        &platform,
        "-f",
        &rules,
        "-f",
        &gateway,
    ])
}

/// curl from the host: (status, answering pod when the echo app answered).
fn curl(args: &[&str]) -> (u16, Option<EchoReply>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n@@%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once("\n@@").unwrap_or(("", "0"));
    (
        code.parse().unwrap_or(0),
        serde_json::from_str(body).ok(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ingress(mesh: &Local, port: &str) -> String {
    mesh.ok(&[
        "service-url",
        "istio-ingressgateway",
        "-n",
        "istio-system",
        "--port",
        port,
    ])
    .trim()
    .to_string()
}

#[test]
fn bookinfo_productpage_through_the_ingress_gateway_from_the_host() {
    let mesh = bookinfo_with_gateway();
    let addr = ingress(&mesh, "80");
    let (code, reply, err) = curl(&[&format!("http://{addr}/productpage")]);
    assert_eq!(code, 200, "{err}");
    let reply = reply.expect("productpage's echo answer");
    assert_eq!(reply.pod, "productpage-v1-0");
    assert_eq!(reply.path, "/productpage");
    // Routed by prefix too (bookinfo-gateway.yaml's /static and /api/v1/products).
    let (code, reply, _) = curl(&[&format!("http://{addr}/api/v1/products/1")]);
    assert_eq!(
        (code, reply.map(|r| r.pod)),
        (200, Some("productpage-v1-0".into()))
    );

    // An unrouted path: 404 from the gateway itself, counted with NR.
    let (code, reply, _) = curl(&[&format!("http://{addr}/reviews/0")]);
    assert_eq!(code, 404);
    assert!(reply.is_none());
    let metrics = mesh.metrics(GATEWAY);
    assert!(
        metric_sum(
            &metrics,
            "istio_requests_total",
            &["response_code=\"404\"", "response_flags=\"NR\""]
        ) >= 1.0,
        "{metrics}"
    );
    // The routed calls, with the gateway as the source workload.
    assert!(
        metric_sum(
            &metrics,
            "istio_requests_total",
            &[
                "source_workload=\"istio-ingressgateway\"",
                "destination_workload=\"productpage-v1\"",
                "response_code=\"200\"",
            ]
        ) >= 2.0,
        "{metrics}"
    );
}

fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

#[test]
fn https_at_the_gateway_with_a_secret_applied_and_rotated() {
    const HOST: &str = "bookinfo.example.com";
    let mesh = bookinfo_with_gateway();
    let (ca1, cert1, key1) = certs("ca one", HOST);
    let secret = mesh.file("secret.yaml", &tls_secret("bookinfo-cert", &cert1, &key1));
    let out = mesh.ok(&["apply", "-f", &secret]);
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    let gw = mesh.file(
        "https.yaml",
        &format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: bookinfo-https}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [{HOST}]\n    tls: {{mode: SIMPLE, credentialName: bookinfo-cert}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bookinfo-https}}\nspec:\n  hosts: [{HOST}]\n  gateways: [bookinfo-https]\n  http:\n  - match: [{{uri: {{exact: /productpage}}}}]\n    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]\n"),
    );
    mesh.apply(&gw, &[GATEWAY]);
    let addr = ingress(&mesh, "443");
    let port = addr.rsplit(':').next().unwrap().to_string();
    let resolve = format!("{HOST}:{port}:127.0.0.1");
    let url = format!("https://{HOST}:{port}/productpage");
    let ca1_file = mesh.file("ca1.pem", &ca1);
    let (code, reply, err) = curl(&["--resolve", &resolve, "--cacert", &ca1_file, &url]);
    assert_eq!(code, 200, "{err}");
    assert_eq!(reply.unwrap().pod, "productpage-v1-0");

    // Rotation: apply the Secret with a certificate from another CA; the
    // gateway serves it without restart (bounded wait for the new chain).
    let (ca2, cert2, key2) = certs("ca two", HOST);
    let ca2_file = mesh.file("ca2.pem", &ca2);
    let rotated = mesh.file("rotated.yaml", &tls_secret("bookinfo-cert", &cert2, &key2));
    mesh.ok(&["apply", "-f", &rotated]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, _, _) = curl(&["--resolve", &resolve, "--cacert", &ca2_file, &url]);
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not served within 15s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, _) = curl(&["--resolve", &resolve, "--cacert", &ca1_file, &url]);
    assert_eq!(code, 0, "the old certificate is still served");
}
