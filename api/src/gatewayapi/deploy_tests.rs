//! Unit tests of the automated deployment: golden objects per Gateway
//! (`UPDATE_GOLDEN=1 cargo test -p mesh-api --lib gatewayapi::deploy` refreshes
//! them after review) and the decisions one by one.

use super::*;

fn gateway(yaml: &str) -> Gateway {
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
    match crate::gatewayapi::parse(&v).unwrap() {
        Some(crate::gatewayapi::GatewayApiResource::Gateway(g)) => *g,
        other => panic!("{other:?}"),
    }
}

const SIMPLE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: shop
  uid: 5a1d3c2e-0000-4000-8000-000000000001
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
spec:
  gatewayClassName: istio
  infrastructure:
    labels:
      team: storefront
      gateway.networking.k8s.io/gateway-name: spoofed
    annotations:
      cost-center: "42"
      gateway.istio.io/controller-version: "5"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
  - name: https_Public.Listener
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs:
      - name: web-cert
  - name: http-alt-host
    hostname: alt.example.com
    port: 80
    protocol: HTTP
  - name: "9000"
    port: 9000
    protocol: TCP
"#;

fn golden(name: &str, objs: &[Value]) {
    let path = format!(
        "{}/src/gatewayapi/testdata/deploy/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = serde_json::to_string_pretty(objs).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run with UPDATE_GOLDEN=1)"));
    assert_eq!(
        text, want,
        "{name}: objects changed: review, then UPDATE_GOLDEN=1"
    );
}

#[test]
fn simple_gateway_golden() {
    golden("simple", &objects(&gateway(SIMPLE)).unwrap());
}

#[test]
fn mesh_class_clusterip_golden() {
    let gw = gateway(
        r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata:
  name: internal
  annotations:
    networking.istio.io/service-type: ClusterIP
spec:
  gatewayClassName: mesh
  listeners:
  - name: grpc
    port: 8080
    protocol: HTTP
"#,
    );
    golden("mesh-clusterip", &objects(&gw).unwrap());
}

#[test]
fn names_labels_and_owner_like_istio() {
    let objs = objects(&gateway(SIMPLE)).unwrap();
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ServiceAccount", "Deployment", "Service"]);
    for o in &objs {
        let m = &o["metadata"];
        assert_eq!(m["name"], "web-istio");
        assert_eq!(m["namespace"], "shop");
        // The controller's label wins over an infrastructure label of the same key.
        assert_eq!(m["labels"][GATEWAY_NAME_LABEL], "web");
        assert_eq!(m["labels"][GATEWAY_CLASS_LABEL], "istio");
        assert_eq!(m["labels"][MANAGED_LABEL], MANAGED_VALUE);
        assert_eq!(m["labels"]["team"], "storefront");
        assert_eq!(m["annotations"], json!({"cost-center": "42"}));
        assert_eq!(
            m["ownerReferences"],
            json!([{
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "name": "web",
                "uid": "5a1d3c2e-0000-4000-8000-000000000001",
                "controller": true,
            }])
        );
    }
    let pod = &objs[1]["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["sidecar.istio.io/inject"], "true");
    assert_eq!(
        pod["metadata"]["annotations"]["inject.istio.io/templates"],
        "gateway"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "web-istio");
    assert_eq!(
        pod["spec"]["securityContext"]["sysctls"],
        json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}])
    );
    assert_eq!(
        objs[1]["spec"]["selector"]["matchLabels"],
        json!({GATEWAY_NAME_LABEL: "web"})
    );
    assert_eq!(
        objs[2]["spec"]["selector"],
        json!({GATEWAY_NAME_LABEL: "web"})
    );
}

#[test]
fn ports_one_per_distinct_listener_port_target_equals_port() {
    let ports = service_ports(&gateway(SIMPLE)).unwrap();
    let got: Vec<(&str, u16, &str)> = ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.app_protocol.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("status-port", 15021, "tcp"),
            ("http", 80, "http"),
            ("https-public-li", 443, "https"),
            // A listener name with no letter is no port name: protocol-index.
            ("tcp-3", 9000, "tcp"),
        ]
    );
    let svc = &objects(&gateway(SIMPLE)).unwrap()[2];
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    for p in svc["spec"]["ports"].as_array().unwrap() {
        assert_eq!(p["port"], p["targetPort"], "{p}");
    }
}

#[test]
fn service_type_annotation_and_addresses() {
    let mut gw = gateway(SIMPLE);
    gw.spec.addresses = vec![crate::gatewayapi::gateway::GatewayAddress {
        type_: "IPAddress".into(),
        value: "10.1.2.3".into(),
    }];
    let svc = &objects(&gw).unwrap()[2];
    assert_eq!(svc["spec"]["loadBalancerIP"], "10.1.2.3");
    gw.metadata.annotations = Some(
        [(SERVICE_TYPE_ANNOTATION.to_string(), "NodePort".to_string())]
            .into_iter()
            .collect(),
    );
    let svc = &objects(&gw).unwrap()[2];
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert!(svc["spec"].get("loadBalancerIP").is_none());
    gw.metadata.annotations = Some(
        [(SERVICE_TYPE_ANNOTATION.to_string(), "Headless".to_string())]
            .into_iter()
            .collect(),
    );
    let e = objects(&gw).unwrap_err();
    assert!(matches!(&e, DeployError::ServiceType { value, .. } if value == "Headless"));
    assert!(e.to_string().contains("\"Headless\""), "{e}");
}

#[test]
fn other_classes_are_not_deployed() {
    let mut gw = gateway(SIMPLE);
    gw.spec.gateway_class_name = "istio-waypoint".into();
    let e = objects(&gw).unwrap_err();
    assert!(e.to_string().contains("\"istio-waypoint\""), "{e}");
    assert!(!is_deployed_class("cilium"));
    assert!(is_deployed_class("istio") && is_deployed_class("mesh"));
}

#[test]
fn default_classes_are_istio_and_alias_with_istio_controller() {
    let classes = default_classes();
    let names: Vec<_> = classes
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["istio", "mesh"]);
    assert!(classes
        .iter()
        .all(|c| c.spec.controller_name == "istio.io/gateway-controller"));
}

#[test]
fn a_hostname_address_is_a_manual_deployment() {
    let mut gw = gateway(SIMPLE);
    gw.spec.addresses = vec![crate::gatewayapi::gateway::GatewayAddress {
        type_: "Hostname".into(),
        value: "istio-ingressgateway.istio-system.svc.cluster.local".into(),
    }];
    assert!(!is_managed(&gw));
    assert_eq!(objects(&gw).unwrap(), Vec::<Value>::new());
    gw.spec.addresses[0].type_ = "IPAddress".into();
    assert!(is_managed(&gw));
    assert_eq!(objects(&gw).unwrap().len(), 3);
}
