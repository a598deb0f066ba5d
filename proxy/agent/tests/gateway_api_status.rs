//! The `mesh-agent` binary in Kubernetes mode against the in-process fake API
//! server writes the Gateway API statuses the spec asks for: a Gateway whose
//! HTTPS listener names a Secret in another namespace without a ReferenceGrant
//! is Accepted with that listener ResolvedRefs=False/RefNotPermitted (its HTTP
//! listener and route unaffected: Accepted, ResolvedRefs=True), and adding the
//! ReferenceGrant in the Secret's namespace turns it ResolvedRefs=True.

use std::time::Duration;

use mesh_e2e::fake_api::*;
use mesh_e2e::testca::TestCa;
use mesh_e2e::wait::eventually_blocking;
use serde_json::{json, Value};

const GW: &str = "Gateway.gateway.networking.k8s.io";
const LIMIT: Duration = Duration::from_secs(20);

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `(status, reason)` of condition `type_` in `conds`.
fn cond(conds: &Value, type_: &str) -> Option<(String, String)> {
    let c = conds.as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
    ))
}

fn is(c: Option<(String, String)>, status: &str, reason: &str) -> bool {
    c == Some((status.to_string(), reason.to_string()))
}

/// Listener `name`'s conditions in the Gateway's written status.
fn listener(fake: &Fake, name: &str) -> Value {
    fake.get(GW, "shop", "web")
        .and_then(|g| {
            g["status"]["listeners"]
                .as_array()?
                .iter()
                .find(|l| l["name"] == name)
                .map(|l| l["conditions"].clone())
        })
        .unwrap_or_default()
}

#[test]
fn agent_writes_gateway_and_route_status_and_ref_not_permitted_until_granted() {
    let fake = Fake::new();
    let leaf = TestCa::new("status-ca", None).leaf("web.example.com", &["web.example.com"], false);
    for ns in ["shop", "certs"] {
        fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    fake.apply(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "web-cert", "namespace": "certs"}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&leaf.cert_pem), "tls.key": b64(&leaf.key_pem)}}));
    fake.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}}));
    fake.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "generation": 1},
        "spec": {"gatewayClassName": "istio", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"},
            {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "web.example.com",
             "tls": {"certificateRefs": [{"name": "web-cert", "namespace": "certs"}]}},
        ]},
    }));
    fake.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop", "generation": 1},
        "spec": {"parentRefs": [{"name": "web", "sectionName": "http"}],
                 "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]},
    }));
    let api = fake.spawn();
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
            .args(["--source", "kubernetes"])
            .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"])
            .env("KUBECONFIG", api.kubeconfig())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    eventually_blocking("the https listener refused: RefNotPermitted", LIMIT, || {
        is(
            cond(&listener(&fake, "https"), "ResolvedRefs"),
            "False",
            "RefNotPermitted",
        )
    });
    let gw = fake.get(GW, "shop", "web").unwrap();
    let conds = &gw["status"]["conditions"];
    assert!(is(cond(conds, "Accepted"), "True", "Accepted"), "{gw:#}");
    assert!(cond(conds, "Programmed").is_some(), "{gw:#}");
    assert_eq!(conds[0]["observedGeneration"], 1, "{gw:#}");
    assert!(
        is(
            cond(&listener(&fake, "http"), "ResolvedRefs"),
            "True",
            "ResolvedRefs"
        ),
        "{gw:#}"
    );
    let https = listener(&fake, "https");
    assert!(
        https.to_string().contains("certs/web-cert") || https.to_string().contains("web-cert"),
        "the message names the Secret: {https}"
    );

    eventually_blocking("the route's status", LIMIT, || {
        fake.get("HTTPRoute", "shop", "web").is_some_and(|r| {
            let p = &r["status"]["parents"][0];
            p["parentRef"]["name"] == "web"
                && p["controllerName"] == "istio.io/gateway-controller"
                && is(cond(&p["conditions"], "Accepted"), "True", "Accepted")
                && is(
                    cond(&p["conditions"], "ResolvedRefs"),
                    "True",
                    "ResolvedRefs",
                )
        })
    });

    // The fix: a ReferenceGrant in the Secret's namespace.
    fake.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "gateways-read-certs", "namespace": "certs"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "shop"}],
                 "to": [{"group": "", "kind": "Secret", "name": "web-cert"}]},
    }));
    eventually_blocking("the https listener resolved once granted", LIMIT, || {
        is(
            cond(&listener(&fake, "https"), "ResolvedRefs"),
            "True",
            "ResolvedRefs",
        )
    });
}
