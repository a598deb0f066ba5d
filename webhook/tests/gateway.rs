//! The `gateway` injection template (`inject.istio.io/templates: gateway`) on the
//! ingress gateway Deployment we ship (manifests/base/gateways/ingress.yaml), through
//! the AdmissionReview path and `kube-inject`: the user's `istio-proxy` placeholder
//! (`image: auto`) becomes `mesh-proxy router` with the sidecar's identity env and
//! mounts, Istio's gateway ports and readiness, non-root, and no istio-init /
//! istio-validation whatever the mesh config says. The injected pod is kept as a
//! golden file (`UPDATE_GOLDEN=1 cargo test -p mesh-webhook --test gateway`); the
//! CNI plugin's tests read it to prove the plugin leaves such a pod alone.

mod common;

use common::{apply_response, as_pod_of, docs, review_for};
use mesh_api::meshconfig::{MeshConfig, NativeSidecars};
use mesh_api::InterceptionMode;
use mesh_webhook::admission::{review, V1};
use mesh_webhook::kube_inject::kube_inject;
use mesh_webhook::InjectContext;
use serde_json::{json, Value};

const INGRESS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../manifests/base/gateways/ingress.yaml"
);
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/gateway-injected.yaml"
);

fn ingress_text() -> String {
    std::fs::read_to_string(INGRESS).expect("manifests/base/gateways/ingress.yaml")
}

fn ingress_deployment() -> Value {
    docs(&ingress_text())
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment in ingress.yaml")
}

/// The pod the ReplicaSet would create, as the API server sends it to the webhook.
fn ingress_pod() -> Value {
    let d = ingress_deployment();
    as_pod_of(&d["spec"]["template"], "istio-system", &d)
}

/// The pod after an AdmissionReview round trip (allowed, patch applied).
fn admitted(pod: &Value, mesh: &MeshConfig) -> Value {
    let body = serde_json::to_vec(&review_for(pod, "gw-1", V1)).unwrap();
    let r = review(&body, mesh, &InjectContext::default());
    assert_eq!(r.body["response"]["allowed"], true, "{}", r.body);
    assert_eq!(r.body["response"]["uid"], "gw-1");
    apply_response(pod, &r.body)
}

fn proxy(pod: &Value) -> &Value {
    let all: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten())
        .filter(|c| c["name"] == "istio-proxy")
        .collect();
    assert_eq!(all.len(), 1, "exactly one istio-proxy");
    all[0]
}

fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"))
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// Everything the gateway template promises, on one injected pod.
fn assert_gateway(pod: &Value, mesh: &MeshConfig) {
    let spec = &pod["spec"];
    assert!(
        spec["initContainers"].is_null(),
        "no istio-init / istio-validation / native sidecar: {}",
        spec["initContainers"]
    );
    assert_eq!(names(&spec["containers"]), ["istio-proxy"]);
    let c = proxy(pod);
    assert_eq!(
        c["image"],
        mesh.images.proxy.as_str(),
        "image: auto replaced"
    );
    assert_eq!(c["command"], json!(["mesh-proxy"]));
    assert_eq!(c["args"], json!(["router"]));
    assert!(c.get("restartPolicy").is_none() && c.get("lifecycle").is_none());
    assert!(c.get("startupProbe").is_none());
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("INSTANCE_IP", "status.podIP"),
        ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ] {
        assert_eq!(env(c, name)["valueFrom"]["fieldRef"]["fieldPath"], path);
    }
    assert_eq!(
        env(c, "ISTIO_META_WORKLOAD_NAME")["value"],
        "istio-ingressgateway"
    );
    assert_eq!(
        env(c, "ISTIO_META_OWNER")["value"],
        "kubernetes://apis/apps/v1/namespaces/istio-system/deployments/istio-ingressgateway"
    );
    for k in ["CA_ADDR", "MESH_AGENT_ADDR"] {
        assert_eq!(env(c, k)["value"], mesh.agent_address.as_str());
    }
    assert_eq!(env(c, "TRUST_DOMAIN")["value"], mesh.trust_domain.as_str());
    let mounts: Vec<(&str, &str)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    for m in [
        ("istio-token", "/var/run/secrets/tokens"),
        ("istiod-ca-cert", "/var/run/secrets/istio"),
        ("istio-podinfo", "/etc/istio/pod"),
    ] {
        assert!(mounts.contains(&m), "{m:?} in {mounts:?}");
        assert!(names(&spec["volumes"]).contains(&m.0));
    }
    let ports: Vec<(u64, &str)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["containerPort"].as_u64().unwrap(),
                p["name"].as_str().unwrap(),
            )
        })
        .collect();
    for p in [
        (15090, "http-envoy-prom"),
        (15021, "status-port"),
        (8080, "http2"),
        (8443, "https"),
    ] {
        assert!(ports.contains(&p), "{p:?} in {ports:?}");
    }
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/healthz/ready", "port": 15021})
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsUser"], 1337);
    assert_eq!(sc["runAsNonRoot"], true, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(sc["capabilities"]["add"].is_null(), "{sc}");
    // Nothing redirects traffic to a gateway, so it is no mTLS sidecar endpoint.
    assert!(pod["metadata"]["labels"]["security.istio.io/tlsMode"].is_null());
    assert_eq!(
        pod["metadata"]["labels"]["service.istio.io/canonical-name"],
        "istio-ingressgateway"
    );
    assert!(spec["securityContext"]["sysctls"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"})));
}

#[test]
fn shipped_ingress_gateway_is_injected_with_the_gateway_template() {
    let mesh = MeshConfig::default();
    let pod = admitted(&ingress_pod(), &mesh);
    assert_gateway(&pod, &mesh);
    let text = serde_yaml_ng::to_string(&pod).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(std::path::Path::new(GOLDEN).parent().unwrap()).unwrap();
        std::fs::write(GOLDEN, &text).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN)
        .unwrap_or_else(|e| panic!("{GOLDEN}: {e} (run with UPDATE_GOLDEN=1)"));
    assert_eq!(
        text, golden,
        "injected gateway pod changed: review, then UPDATE_GOLDEN=1"
    );
    // Injection is a fixpoint for gateways too.
    assert_eq!(admitted(&pod, &mesh), pod);
}

#[test]
fn gateways_never_capture_whatever_the_mesh_config_says() {
    let mut cni = MeshConfig::default();
    cni.cni.enabled = true;
    let mut tproxy = MeshConfig::default();
    tproxy.default_config.interception_mode = Some(InterceptionMode::Tproxy);
    let mut legacy = MeshConfig {
        native_sidecars: NativeSidecars::Off,
        ..Default::default()
    };
    legacy.hold_application_until_proxy_starts = true;
    let native = MeshConfig {
        native_sidecars: NativeSidecars::On,
        ..Default::default()
    };
    for mesh in [cni, tproxy, legacy, native] {
        assert_gateway(&admitted(&ingress_pod(), &mesh), &mesh);
    }
}

#[test]
fn kube_inject_fills_the_same_gateway_container() {
    let mesh = MeshConfig::default();
    let out = kube_inject(&ingress_text(), &mesh, &InjectContext::default()).unwrap();
    let dep = docs(&out)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let mut tpl = dep["spec"]["template"].clone();
    tpl["metadata"]["namespace"] = json!("istio-system");
    assert_gateway(&tpl, &mesh);
    assert_eq!(proxy(&tpl), proxy(&admitted(&ingress_pod(), &mesh)));
    // The Service, PDB and ServiceAccount pass through untouched.
    let kinds: Vec<Value> = docs(&out).iter().map(|d| d["kind"].clone()).collect();
    assert_eq!(
        kinds,
        json!([
            "ServiceAccount",
            "Deployment",
            "PodDisruptionBudget",
            "Service"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[test]
fn the_same_pod_without_the_template_annotation_gets_a_sidecar() {
    let mesh = MeshConfig::default();
    let mut pod = ingress_pod();
    pod["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("inject.istio.io/templates");
    let out = admitted(&pod, &mesh);
    assert_eq!(
        names(&out["spec"]["initContainers"]),
        ["istio-init", "istio-proxy"]
    );
    let c = proxy(&out);
    assert_eq!(c["args"], json!(["sidecar"]));
    assert_eq!(c["restartPolicy"], "Always");
    assert_eq!(
        out["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    assert!(out["spec"]["securityContext"]["sysctls"].is_null());
}

#[test]
fn unknown_templates_are_refused_naming_the_template() {
    let mut pod = ingress_pod();
    pod["metadata"]["annotations"]["inject.istio.io/templates"] = json!("gateway,spire");
    let body = serde_json::to_vec(&review_for(&pod, "gw-2", V1)).unwrap();
    let r = review(&body, &MeshConfig::default(), &InjectContext::default());
    let resp = &r.body["response"];
    assert_eq!(resp["allowed"], false, "{resp}");
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("\"spire\"") && msg.contains("inject.istio.io/templates"),
        "{msg}"
    );
}
