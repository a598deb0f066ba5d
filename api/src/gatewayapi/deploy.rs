//! Automated deployment of a Gateway API `Gateway`: the ServiceAccount,
//! Deployment and Service Istio's gateway controller creates for a Gateway whose
//! class is `istio` (or our alias `mesh`), all named `<gateway>-<class>`.
//!
//! Shared by the agent (server-side applied in a cluster) and `meshctl local`
//! (run like the installed gateways), so both deploy the same objects. The pod
//! template does not carry the proxy itself: it asks the injector for its
//! `gateway` template (label `sidecar.istio.io/inject: "true"`, annotation
//! `inject.istio.io/templates: gateway`, container `istio-proxy` image `auto`),
//! which turns it into `mesh-proxy router` with the agent address and identity,
//! exactly like `istio-ingressgateway`.
//!
//! Ports: the router listens on each listener's own port (Service port =
//! targetPort = listener port), plus the status port 15021. The pod allows
//! unprivileged binds below 1024 with the per-netns sysctl
//! `net.ipv4.ip_unprivileged_port_start=0`, as Istio's template does, because the
//! router runs as UID 1337.

use super::common::{CLASS_ISTIO, CLASS_MESH, CONTROLLER_NAME, GROUP};
use super::gateway::{Gateway, GatewayClass};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Label naming the Gateway on every generated object and the pod selector.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Label naming the Gateway's class on every generated object.
pub const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";
/// Label marking objects the gateway controller manages (and prunes).
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
/// Value of [`MANAGED_LABEL`], Istio's.
pub const MANAGED_VALUE: &str = "istio.io-gateway-controller";
/// Gateway annotation choosing the Service type (default `LoadBalancer`).
pub const SERVICE_TYPE_ANNOTATION: &str = "networking.istio.io/service-type";
/// The gateway pod's readiness/status port.
pub const STATUS_PORT: u16 = 15021;
/// The sysctl letting UID 1337 bind listener ports below 1024.
pub const UNPRIVILEGED_PORT_SYSCTL: &str = "net.ipv4.ip_unprivileged_port_start";

/// Gateway annotations that steer the controller and are not copied onto the
/// generated objects (Istio omits the same ones).
const CONTROL_ANNOTATIONS: [&str; 4] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "gateway.istio.io/name-override",
    "gateway.istio.io/service-account",
    "gateway.istio.io/controller-version",
];

/// Why a Gateway cannot be deployed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    #[error("Gateway {namespace}/{name}: class {class:?} is not deployed by this controller (expected {CLASS_ISTIO:?} or {CLASS_MESH:?})")]
    NotOurClass {
        namespace: String,
        name: String,
        class: String,
    },
    #[error("Gateway has no metadata.name")]
    NoName,
    #[error("Gateway {namespace}/{name}: annotation {SERVICE_TYPE_ANNOTATION}={value:?} is not a Service type (expected ClusterIP, NodePort or LoadBalancer)")]
    ServiceType {
        namespace: String,
        name: String,
        value: String,
    },
    #[error(
        "Gateway {namespace}/{name}: listener {listener:?} port {port} is out of range 1-65535"
    )]
    Port {
        namespace: String,
        name: String,
        listener: String,
        port: i32,
    },
}

/// Whether Gateways of this class are deployed (and the class owned) by us.
pub fn is_deployed_class(class: &str) -> bool {
    class == CLASS_ISTIO || class == CLASS_MESH
}

/// Whether the controller deploys the Gateway itself. As in Istio, a Gateway
/// naming an address of type `Hostname` (an existing gateway Service, e.g.
/// `istio-ingressgateway.istio-system.svc.cluster.local`) is a manual
/// deployment: it binds to that gateway and nothing is generated.
pub fn is_managed(gw: &Gateway) -> bool {
    !gw.spec.addresses.iter().any(|a| a.type_ == "Hostname")
}

/// `<gateway>-<class>`: the Deployment, Service and ServiceAccount name.
pub fn deployment_name(gw: &Gateway) -> String {
    format!(
        "{}-{}",
        gw.metadata.name.as_deref().unwrap_or_default(),
        gw.spec.gateway_class_name
    )
}

/// The GatewayClasses the controller makes sure exist (never overwriting a
/// user's), as Istio does for `istio`.
pub fn default_classes() -> Vec<GatewayClass> {
    [CLASS_ISTIO, CLASS_MESH]
        .into_iter()
        .map(|name| {
            GatewayClass::new(
                name,
                super::GatewayClassSpec {
                    controller_name: CONTROLLER_NAME.into(),
                    description: Some(
                        "The default Istio GatewayClass (deployed by the mesh agent)".into(),
                    ),
                    ..Default::default()
                },
            )
        })
        .collect()
}

/// A Service port: its name, number and appProtocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub app_protocol: String,
}

/// The Service ports: status-port 15021 first, then one per distinct listener
/// port (the first listener on a port names it).
pub fn service_ports(gw: &Gateway) -> Result<Vec<ServicePort>, DeployError> {
    let mut out = vec![ServicePort {
        name: "status-port".into(),
        port: STATUS_PORT,
        app_protocol: "tcp".into(),
    }];
    for (i, l) in gw.spec.listeners.iter().enumerate() {
        let port = u16::try_from(l.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| DeployError::Port {
                namespace: namespace(gw),
                name: gw.metadata.name.clone().unwrap_or_default(),
                listener: l.name.clone(),
                port: l.port,
            })?;
        if out.iter().any(|p| p.port == port) {
            continue;
        }
        let protocol = l.protocol.to_ascii_lowercase();
        let name = port_name(&l.name).unwrap_or_else(|| format!("{protocol}-{i}"));
        out.push(ServicePort {
            name,
            port,
            app_protocol: protocol,
        });
    }
    Ok(out)
}

/// A listener name as a Service port name (an IANA service name: at most 15
/// lowercase alphanumerics and dashes, no leading/trailing dash); `None` when
/// nothing usable is left.
fn port_name(listener: &str) -> Option<String> {
    let mut s: String = listener
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(15);
    let s = s.trim_matches('-').to_string();
    (!s.is_empty() && s.chars().any(|c| c.is_ascii_alphabetic())).then_some(s)
}

fn namespace(gw: &Gateway) -> String {
    gw.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// The ServiceAccount, Deployment and Service for `gw`, in that order; none
/// for a manual deployment ([`is_managed`]).
pub fn objects(gw: &Gateway) -> Result<Vec<Value>, DeployError> {
    let gw_name = gw.metadata.name.clone().ok_or(DeployError::NoName)?;
    let ns = namespace(gw);
    let class = gw.spec.gateway_class_name.clone();
    if !is_deployed_class(&class) {
        return Err(DeployError::NotOurClass {
            namespace: ns,
            name: gw_name,
            class,
        });
    }
    if !is_managed(gw) {
        return Ok(Vec::new());
    }
    let gw_annotations = gw.metadata.annotations.clone().unwrap_or_default();
    let service_type = match gw_annotations
        .get(SERVICE_TYPE_ANNOTATION)
        .map(String::as_str)
    {
        None => "LoadBalancer",
        Some(t @ ("ClusterIP" | "NodePort" | "LoadBalancer")) => t,
        Some(other) => {
            return Err(DeployError::ServiceType {
                namespace: ns,
                name: gw_name,
                value: other.into(),
            })
        }
    };
    let ports = service_ports(gw)?;
    let name = deployment_name(gw);
    let infra = gw.spec.infrastructure.clone().unwrap_or_default();

    // Infrastructure labels first, the controller's own win on a clash.
    let mut labels: BTreeMap<String, String> = infra.labels.clone();
    labels.insert(GATEWAY_NAME_LABEL.into(), gw_name.clone());
    labels.insert(GATEWAY_CLASS_LABEL.into(), class.clone());
    labels.insert(MANAGED_LABEL.into(), MANAGED_VALUE.into());
    let mut annotations = infra.annotations.clone();
    for k in CONTROL_ANNOTATIONS {
        annotations.remove(k);
    }
    let owner = json!([{
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "Gateway",
        "name": gw_name,
        "uid": gw.metadata.uid.clone().unwrap_or_default(),
        "controller": true,
    }]);
    let meta = |kind_labels: &BTreeMap<String, String>| {
        let mut m = Map::new();
        m.insert("name".into(), json!(name));
        m.insert("namespace".into(), json!(ns));
        m.insert("labels".into(), json!(kind_labels));
        if !annotations.is_empty() {
            m.insert("annotations".into(), json!(annotations));
        }
        m.insert("ownerReferences".into(), owner.clone());
        Value::Object(m)
    };

    let mut pod_labels = labels.clone();
    pod_labels.insert("service.istio.io/canonical-name".into(), name.clone());
    pod_labels.insert(
        "service.istio.io/canonical-revision".into(),
        "latest".into(),
    );
    // Injection is asked for by the pod itself, so it happens whatever the
    // namespace's labels say (Istio renders the proxy in place instead).
    pod_labels.insert("sidecar.istio.io/inject".into(), "true".into());
    let mut pod_annotations = annotations.clone();
    pod_annotations.insert("inject.istio.io/templates".into(), "gateway".into());
    pod_annotations.insert("istio.io/rev".into(), "default".into());
    pod_annotations.insert("prometheus.io/path".into(), "/stats/prometheus".into());
    pod_annotations.insert("prometheus.io/port".into(), "15020".into());
    pod_annotations.insert("prometheus.io/scrape".into(), "true".into());

    let selector = json!({ GATEWAY_NAME_LABEL: gw_name });
    let container_ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"containerPort": p.port, "name": p.name, "protocol": "TCP"}))
        .collect();
    let mut service_spec = json!({
        "type": service_type,
        "selector": selector,
        "ports": ports.iter().map(|p| json!({
            "name": p.name,
            "port": p.port,
            "targetPort": p.port,
            "protocol": "TCP",
            "appProtocol": p.app_protocol,
        })).collect::<Vec<_>>(),
    });
    if service_type == "LoadBalancer" {
        if let Some(a) = gw.spec.addresses.first() {
            service_spec["loadBalancerIP"] = json!(a.value);
        }
    }

    Ok(vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(&labels),
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(&labels),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                    "spec": {
                        "serviceAccountName": name,
                        "securityContext": {
                            "sysctls": [{"name": UNPRIVILEGED_PORT_SYSCTL, "value": "0"}],
                        },
                        "containers": [{
                            "name": "istio-proxy",
                            "image": "auto",
                            "ports": container_ports,
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(&labels),
            "spec": service_spec,
        }),
    ])
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;
