//! The gateways `meshctl local up` installs in `istio-system`, as Istio's demo
//! profile does: `istio-ingressgateway` (status-port 15021, http2 80→8080,
//! https 443→8443, a LoadBalancer Service, so its ports are published on the
//! host) and `istio-egressgateway` (http2 80→8080, https 443→8443, ClusterIP).
//!
//! Each is written here once as the Kubernetes objects a cluster install has —
//! a Deployment whose pod template asks for the injector's `gateway` template,
//! its ServiceAccount and its Service — and then goes through the same path as
//! any applied workload: the real injector turns the `istio-proxy` container
//! into `mesh-proxy router` with the agent address and identity env, and the
//! local runtime starts it with its CA token like a sidecar. The gateway's
//! command line is therefore the injector's, in one place.

use serde_json::{json, Value};

/// Namespace of the gateways, as in Istio's profiles.
pub const NAMESPACE: &str = "istio-system";

/// One of the two gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ingress,
    Egress,
}

impl Kind {
    /// Workload, Service and Deployment name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ingress => "istio-ingressgateway",
            Kind::Egress => "istio-egressgateway",
        }
    }

    /// The `istio` label value Gateways select.
    fn istio_label(self) -> &'static str {
        match self {
            Kind::Ingress => "ingressgateway",
            Kind::Egress => "egressgateway",
        }
    }

    pub fn service_account(self) -> String {
        format!("{}-service-account", self.name())
    }

    /// Service ports: (name, port, targetPort).
    fn ports(self) -> &'static [(&'static str, u16, u16)] {
        match self {
            Kind::Ingress => &[
                ("status-port", 15021, 15021),
                ("http2", 80, 8080),
                ("https", 443, 8443),
            ],
            Kind::Egress => &[("http2", 80, 8080), ("https", 443, 8443)],
        }
    }

    /// The ingress gateway is reached from outside (LoadBalancer, published on
    /// the host's loopback locally); the egress gateway only from the mesh.
    fn service_type(self) -> &'static str {
        match self {
            Kind::Ingress => "LoadBalancer",
            Kind::Egress => "ClusterIP",
        }
    }

    fn labels(self) -> Value {
        json!({"app": self.name(), "istio": self.istio_label()})
    }

    /// The Deployment, ServiceAccount and Service of this gateway.
    pub fn objects(self) -> Vec<Value> {
        let name = self.name();
        let mut pod_labels = self.labels();
        // Injection is asked for by the pod, as Istio's gateway charts do, so it
        // happens whatever the namespace's labels are.
        pod_labels["sidecar.istio.io/inject"] = json!("true");
        let container_ports: Vec<Value> = self
            .ports()
            .iter()
            .map(|(n, _, target)| json!({"containerPort": target, "name": n, "protocol": "TCP"}))
            .collect();
        let service_ports: Vec<Value> = self
            .ports()
            .iter()
            .map(|(n, port, target)| {
                json!({"name": n, "port": port, "targetPort": target, "protocol": "TCP"})
            })
            .collect();
        vec![
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": self.service_account(), "namespace": NAMESPACE, "labels": self.labels()},
            }),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": self.labels()},
                "spec": {"type": self.service_type(), "selector": self.labels(), "ports": service_ports},
            }),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": self.labels()},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": self.labels()},
                    "template": {
                        "metadata": {
                            "labels": pod_labels,
                            "annotations": {"inject.istio.io/templates": "gateway"},
                        },
                        "spec": {
                            "serviceAccountName": self.service_account(),
                            "containers": [{
                                "name": "istio-proxy",
                                "image": "auto",
                                "ports": container_ports,
                            }],
                        },
                    },
                },
            }),
        ]
    }
}

/// `--gateways`: `ingress,egress` (Istio's demo profile), `ingress`, `egress`
/// or `none`.
pub fn parse(s: &str) -> Result<Vec<Kind>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let k = match part {
            "ingress" => Kind::Ingress,
            "egress" => Kind::Egress,
            "none" if s.trim() == "none" => return Ok(Vec::new()),
            other => {
                return Err(format!(
                    "unknown gateway {other:?} in {s:?} (expected ingress, egress, \
                     ingress,egress or none)"
                ))
            }
        };
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

/// The objects of the chosen gateways plus the `istio-system` Namespace.
pub fn install(kinds: &[Kind]) -> Vec<Value> {
    if kinds.is_empty() {
        return Vec::new();
    }
    let mut out = vec![json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE},
    })];
    for k in kinds {
        out.extend(k.objects());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_flag() {
        assert_eq!(
            parse("ingress,egress").unwrap(),
            [Kind::Ingress, Kind::Egress]
        );
        assert_eq!(parse("egress").unwrap(), [Kind::Egress]);
        assert_eq!(parse("none").unwrap(), []);
        let e = parse("ingress,bogus").unwrap_err();
        assert!(e.contains("\"bogus\""), "{e}");
        assert!(parse("none,ingress").is_err());
    }

    #[test]
    fn ingress_service_ports_like_istio() {
        let objs = Kind::Ingress.objects();
        let svc = objs.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        let ports: Vec<(String, u64, u64)> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["port"].as_u64().unwrap(),
                    p["targetPort"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("status-port".into(), 15021, 15021),
                ("http2".into(), 80, 8080),
                ("https".into(), 443, 8443)
            ]
        );
        let egress = Kind::Egress.objects();
        let svc = egress.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["selector"]["istio"], "egressgateway");
    }
}
