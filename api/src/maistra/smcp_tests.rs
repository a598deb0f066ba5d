//! Unit tests of the SMCP types and mapping, with an SMCP as OSSM users write it.

use super::*;
use crate::maistra::smcp::ServiceMeshControlPlane;
use crate::meshtracing::compile;
use crate::tracing::TracingProvider;

/// A production-style SMCP: ingress LoadBalancer, Jaeger at 100 %, JSON
/// access log, REGISTRY_ONLY, mTLS, add-ons and runtime tuning we ignore.
pub(crate) const BASIC: &str = r#"
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata:
  name: basic
  namespace: my-istio-namespace
spec:
  version: v2.5
  mode: ClusterWide
  tracing:
    type: Jaeger
    sampling: 10000
  policy:
    type: Istiod
  telemetry:
    type: Istiod
  proxy:
    accessLogging:
      file:
        name: /dev/stdout
        encoding: JSON
    networking:
      trafficControl:
        outbound:
          policy: REGISTRY_ONLY
          excludedIPRanges: ["169.254.169.254/32", "10.96.0.1"]
          excludedPorts: [15999, "25"]
        inbound:
          excludedPorts: ["22"]
    runtime:
      container:
        resources:
          requests: {cpu: 50m}
  gateways:
    openshiftRoute:
      enabled: false
    ingress:
      enabled: true
      service:
        type: LoadBalancer
        loadBalancerIP: 192.0.2.10
        externalTrafficPolicy: Local
    egress:
      enabled: false
  security:
    dataPlane:
      mtls: true
      automtls: true
    manageNetworkPolicy: false
  addons:
    kiali:
      enabled: true
      name: kiali
    grafana:
      enabled: true
    prometheus:
      enabled: true
    jaeger:
      name: jaeger
      install:
        storage:
          type: Memory
  runtime:
    components:
      pilot:
        deployment:
          replicas: 2
  general:
    logging:
      componentLevels: {default: info}
"#;

/// A whole object, or a bare `spec: ...` snippet (named `basic`).
fn parse(y: &str) -> ServiceMeshControlPlane {
    let mut v: serde_json::Value = serde_yaml_ng::from_str(y).unwrap();
    if v.get("metadata").is_none() {
        v["metadata"] = serde_json::json!({"name": "basic"});
    }
    serde_json::from_value(v).unwrap()
}

fn owner() -> Owner {
    Owner {
        name: "basic".into(),
        namespace: "my-istio-namespace".into(),
        uid: Some("u-1".into()),
    }
}

#[test]
fn basic_smcp_maps_onto_mesh_config() {
    let smcp = parse(BASIC);
    let r = render(&smcp.spec, &owner(), &MeshConfig::default()).unwrap();
    let m = &r.mesh;
    assert_eq!(m.root_namespace, "my-istio-namespace");
    assert_eq!(m.outbound_traffic_policy.mode, OutboundMode::RegistryOnly);
    assert_eq!(m.access_log_file, "/dev/stdout");
    assert_eq!(m.access_log_encoding, AccessLogEncoding::Json);
    assert_eq!(
        m.redirect.exclude_ip_ranges,
        vec![
            "169.254.169.254/32".parse().unwrap(),
            "10.96.0.1/32".parse().unwrap()
        ]
    );
    assert_eq!(m.redirect.exclude_outbound_ports, vec![15999, 25]);
    assert_eq!(m.redirect.exclude_inbound_ports, vec![22]);
    // Tracing compiles to a zipkin exporter at Jaeger's collector, 100 %.
    let view = compile(
        m.enable_tracing,
        m.default_config.tracing.as_ref(),
        &m.extension_providers,
        &m.default_providers,
    )
    .unwrap()
    .unwrap();
    assert_eq!(view.sampling, 100.0);
    assert_eq!(
        view.provider,
        Some(TracingProvider::Zipkin {
            address: "jaeger-collector.my-istio-namespace.svc:9411".into()
        })
    );
}

#[test]
fn sampling_scale_and_tracing_off() {
    let mut smcp = parse(BASIC);
    smcp.spec.tracing.as_mut().unwrap().sampling = Some(100);
    let m = mesh_config(&smcp.spec, "istio-system", &MeshConfig::default()).unwrap();
    assert_eq!(m.default_config.tracing.unwrap().sampling, Some(1.0));
    smcp.spec.tracing.as_mut().unwrap().type_ = Some("None".into());
    let m = mesh_config(&smcp.spec, "istio-system", &MeshConfig::default()).unwrap();
    assert!(!m.enable_tracing);
}

#[test]
fn gateways_are_the_manifest_objects_retargeted() {
    let smcp = parse(BASIC);
    let r = render(&smcp.spec, &owner(), &MeshConfig::default()).unwrap();
    let kinds: Vec<(String, String)> = r
        .objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ServiceAccount", "istio-ingressgateway"),
            ("Deployment", "istio-ingressgateway"),
            ("PodDisruptionBudget", "istio-ingressgateway"),
            ("Service", "istio-ingressgateway"),
            ("PeerAuthentication", "default"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
        "egress is off"
    );
    for o in &r.objects {
        assert_eq!(o["metadata"]["namespace"], "my-istio-namespace");
        assert_eq!(o["metadata"]["labels"][OWNER_LABEL], "basic");
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], "u-1");
    }
    let svc = &r.objects[3]["spec"];
    assert_eq!(svc["type"], "LoadBalancer");
    assert_eq!(svc["loadBalancerIP"], "192.0.2.10");
    assert_eq!(svc["externalTrafficPolicy"], "Local");
    let ports: Vec<(u64, u64)> = svc["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(15021, 15021), (80, 8080), (443, 8443)]);
    let dep = &r.objects[1];
    assert_eq!(
        dep["spec"]["template"]["metadata"]["annotations"]["inject.istio.io/templates"],
        "gateway"
    );
    assert_eq!(r.objects[4]["spec"]["mtls"]["mode"], "STRICT");
}

#[test]
fn gateways_default_on_and_egress_is_cluster_ip() {
    let smcp = parse("spec: {security: {dataPlane: {mtls: false}}}");
    let mut o = owner();
    o.uid = None;
    let r = render(&smcp.spec, &o, &MeshConfig::default()).unwrap();
    let svcs: Vec<(&str, &str)> = r
        .objects
        .iter()
        .filter(|o| o["kind"] == "Service")
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap(),
                o["spec"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        svcs,
        [
            ("istio-ingressgateway", "LoadBalancer"),
            ("istio-egressgateway", "ClusterIP")
        ]
    );
    assert!(r
        .objects
        .iter()
        .all(|o| o["metadata"]["ownerReferences"].is_null()));
    assert_eq!(
        r.objects.last().unwrap()["spec"]["mtls"]["mode"],
        "PERMISSIVE"
    );
    let none = parse("spec: {gateways: {enabled: false}}");
    assert!(render(&none.spec, &o, &MeshConfig::default())
        .unwrap()
        .objects
        .is_empty());
}

#[test]
fn service_ports_replace_the_defaults() {
    let smcp = parse(
        "spec: {gateways: {ingress: {service: {type: NodePort, ports: [{name: http, port: 8000, targetPort: 8080}, {port: 9443, targetPort: https}]}}}}",
    );
    let r = render(&smcp.spec, &owner(), &MeshConfig::default()).unwrap();
    let svc = r.objects.iter().find(|o| o["kind"] == "Service").unwrap();
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(
        svc["spec"]["ports"],
        serde_json::json!([
            {"name": "http", "port": 8000, "targetPort": 8080, "protocol": "TCP"},
            {"name": "port-9443", "port": 9443, "targetPort": "https", "protocol": "TCP"},
        ])
    );
}

#[test]
fn ignored_fields_are_listed_by_path() {
    let smcp = parse(BASIC);
    let rep = field_report(&smcp.spec);
    for p in [
        "spec.mode",
        "spec.policy",
        "spec.telemetry",
        "spec.proxy.runtime",
        "spec.gateways.openshiftRoute",
        "spec.security.dataPlane.automtls",
        "spec.addons.kiali",
        "spec.addons.grafana",
        "spec.addons.prometheus",
        "spec.addons.jaeger.install",
        "spec.runtime",
        "spec.general",
    ] {
        assert!(
            rep.ignored.contains(&p.to_string()),
            "{p}: {:?}",
            rep.ignored
        );
    }
    for p in [
        "spec.tracing.sampling",
        "spec.proxy.accessLogging.file.encoding",
        "spec.proxy.networking.trafficControl.outbound.policy",
        "spec.gateways.ingress.service.loadBalancerIP",
        "spec.security.dataPlane.mtls",
        "spec.addons.jaeger.name",
    ] {
        assert!(
            rep.applied.contains(&p.to_string()),
            "{p}: {:?}",
            rep.applied
        );
    }
    assert!(rep.applied.iter().all(|p| !rep.ignored.contains(p)));
}

#[test]
fn unknown_fields_survive_a_round_trip() {
    let smcp = parse(BASIC);
    let back: ServiceMeshControlPlane =
        serde_json::from_value(serde_json::to_value(&smcp).unwrap()).unwrap();
    assert_eq!(back, smcp);
    let v = serde_json::to_value(&smcp.spec).unwrap();
    assert_eq!(
        v["runtime"]["components"]["pilot"]["deployment"]["replicas"],
        2
    );
    assert_eq!(v["addons"]["kiali"]["name"], "kiali");
}

#[test]
fn bad_values_name_field_and_value() {
    let cases = [
        ("spec: {tracing: {sampling: 10001}}", "spec.tracing.sampling", "10001"),
        ("spec: {tracing: {sampling: -1}}", "spec.tracing.sampling", "-1"),
        ("spec: {tracing: {type: Datadog}}", "spec.tracing.type", "Datadog"),
        (
            "spec: {proxy: {networking: {trafficControl: {outbound: {policy: SOMETIMES}}}}}",
            "spec.proxy.networking.trafficControl.outbound.policy",
            "SOMETIMES",
        ),
        (
            "spec: {proxy: {networking: {trafficControl: {outbound: {excludedIPRanges: [10.0.0.0/8, 10.0.0/33]}}}}}",
            "spec.proxy.networking.trafficControl.outbound.excludedIPRanges[1]",
            "10.0.0/33",
        ),
        (
            "spec: {proxy: {networking: {trafficControl: {outbound: {excludedPorts: [70000]}}}}}",
            "spec.proxy.networking.trafficControl.outbound.excludedPorts[0]",
            "70000",
        ),
        (
            "spec: {proxy: {networking: {trafficControl: {inbound: {excludedPorts: [ssh]}}}}}",
            "spec.proxy.networking.trafficControl.inbound.excludedPorts[0]",
            "ssh",
        ),
        (
            "spec: {proxy: {accessLogging: {file: {encoding: XML}}}}",
            "spec.proxy.accessLogging.file.encoding",
            "XML",
        ),
        (
            "spec: {proxy: {accessLogging: {file: {name: /dev/stdout, format: '%NOPE%'}}}}",
            "spec.proxy.accessLogging.file.format",
            "%NOPE%",
        ),
        (
            "spec: {gateways: {ingress: {service: {type: External}}}}",
            "spec.gateways.ingress.service.type",
            "External",
        ),
        (
            "spec: {gateways: {egress: {service: {loadBalancerIP: nowhere}}}}",
            "spec.gateways.egress.service.loadBalancerIP",
            "nowhere",
        ),
        (
            "spec: {gateways: {ingress: {service: {ports: [{port: 0}]}}}}",
            "spec.gateways.ingress.service.ports[0].port",
            "0",
        ),
    ];
    for (y, field, value) in cases {
        let smcp = parse(y);
        let e = render(&smcp.spec, &owner(), &MeshConfig::default()).unwrap_err();
        assert_eq!(e.field, field, "{y}: {e}");
        assert_eq!(e.value, value, "{y}: {e}");
        assert!(e.to_string().contains(field), "{e}");
    }
}

#[test]
fn status_conditions_and_last_good() {
    let smcp = parse(BASIC);
    let ok = render(&smcp.spec, &owner(), &MeshConfig::default());
    let s1 = status(None, &ok, &[], Some(1), "t1");
    let get =
        |s: &SmcpStatus, t: &str| s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap();
    assert_eq!(get(&s1, "Reconciled").status, "True");
    assert_eq!(get(&s1, "Ready").status, "True");
    assert!(s1.ignored_fields.contains(&"spec.addons.kiali".to_string()));
    let bad_smcp = parse("spec: {tracing: {sampling: 20000}}");
    let err = render(&bad_smcp.spec, &owner(), &MeshConfig::default());
    let s2 = status(Some(&s1), &err, &[], Some(2), "t2");
    let rec = get(&s2, "Reconciled");
    assert_eq!(rec.status, "False");
    assert_eq!(rec.reason, "ValidationFailed");
    assert!(
        rec.message.contains("spec.tracing.sampling") && rec.message.contains("20000"),
        "{}",
        rec.message
    );
    assert_eq!(
        get(&s2, "Ready"),
        get(&s1, "Ready"),
        "last good stays Ready"
    );
    assert_eq!(s2.observed_generation, Some(2));
    assert_eq!(s2.applied_fields, s1.applied_fields);
    // Unchanged status keeps the transition time.
    let s3 = status(Some(&s1), &ok, &[], Some(3), "t3");
    assert_eq!(
        get(&s3, "Ready").last_transition_time.as_deref(),
        Some("t1")
    );
}

#[test]
fn ready_waits_for_the_gateway_deployments() {
    let d = |avail: Option<i64>| {
        let mut d = serde_json::json!({"metadata": {"name": "istio-ingressgateway"}, "spec": {"replicas": 2}});
        if let Some(a) = avail {
            d["status"] = serde_json::json!({"availableReplicas": a});
        }
        d
    };
    assert_eq!(
        deployment_waiting(&d(None)).as_deref(),
        Some("Deployment/istio-ingressgateway (0/2 available)")
    );
    assert_eq!(
        deployment_waiting(&d(Some(1))).as_deref(),
        Some("Deployment/istio-ingressgateway (1/2 available)")
    );
    assert_eq!(deployment_waiting(&d(Some(2))), None);
    let smcp = parse(BASIC);
    let ok = render(&smcp.spec, &owner(), &MeshConfig::default());
    let waiting = vec!["Deployment/istio-ingressgateway (0/2 available)".to_string()];
    let mut st = status(None, &ok, &waiting, Some(1), "t1");
    let r = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .clone();
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "ComponentsNotReady")
    );
    assert!(
        r.message.contains("istio-ingressgateway (0/2 available)"),
        "{}",
        r.message
    );
    set_ready(&mut st, ready(&[], "t2"));
    let r = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (r.status.as_str(), r.last_transition_time.as_deref()),
        ("True", Some("t2"))
    );
    set_ready(&mut st, ready(&[], "t3"));
    let r = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        r.last_transition_time.as_deref(),
        Some("t2"),
        "unchanged status keeps its time"
    );
    assert_eq!(st.conditions.len(), 2);
}
