//! Compiling a view and looking its services up by address, host and route
//! destination.

use super::*;

use mesh_api::syncapi::{Endpoint as VEp, Service as ViewService, ServicePort};

fn view() -> ProxyView {
    ProxyView {
        version: 7,
        services: vec![ViewService {
            hostname: "reviews.default.svc.cluster.local".into(),
            namespace: "default".into(),
            addresses: vec!["10.96.0.10".into()],
            ports: vec![ServicePort {
                name: "http".into(),
                port: 9080,
                target_port: Some(9080),
                protocol: "HTTP".into(),
            }],
            endpoints: vec![
                VEp {
                    address: "10.88.0.5".into(),
                    ready: true,
                    ..Default::default()
                },
                VEp {
                    address: "10.88.0.6".into(),
                    ready: false,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
        .into()],
        outbound_traffic_policy: "REGISTRY_ONLY".into(),
        ..Default::default()
    }
}

#[test]
fn host_lookups_and_shared_endpoint_facts() {
    let mut v = view();
    let svc = std::sync::Arc::make_mut(&mut v.services[0]);
    svc.ports.push(ServicePort {
        name: "grpc".into(),
        port: 9090,
        target_port: None,
        protocol: "GRPC".into(),
    });
    svc.endpoints[0].labels = [("app".to_string(), "reviews".to_string())].into();
    svc.endpoints[0].service_account = Some("bookinfo-reviews".into());
    let fqdn = "reviews.default.svc.cluster.local";
    v.destination_rules.insert(
        fqdn.into(),
        serde_yaml_ng::from_str("host: reviews\nsubsets: [{name: v1, labels: {app: reviews}}]\n")
            .unwrap(),
    );
    let snap = Snapshot::compile(v, "default").unwrap();
    // Route destinations: by port, the only port, the fallback, a subset.
    let dest = |port, subset, fallback| {
        snap.destination(fqdn, port, subset, fallback)
            .map(|c| c.name.clone())
    };
    assert_eq!(
        dest(Some(9090), None, 1).as_deref(),
        Some("outbound|9090||reviews.default.svc.cluster.local")
    );
    assert_eq!(
        dest(None, None, 9080).as_deref(),
        Some("outbound|9080||reviews.default.svc.cluster.local")
    );
    assert_eq!(
        dest(None, None, 80),
        None,
        "two ports and no fallback among them"
    );
    assert_eq!(
        dest(Some(9080), Some("v1"), 1).as_deref(),
        Some("outbound|9080|v1|reviews.default.svc.cluster.local")
    );
    assert_eq!(dest(Some(9080), Some("v2"), 1), None);
    assert_eq!(
        snap.destination("ratings.default.svc.cluster.local", None, None, 9080)
            .map(|c| c.port),
        None
    );
    assert_eq!(
        snap.all_clusters().count(),
        4,
        "two ports, each with subset v1"
    );
    let port = |a: &str, p: u16| snap.cluster_for_authority(a, p).map(|c| c.port);
    // A name and its aliases, by the connection's port or an explicit one.
    assert_eq!(port("reviews", 9090), Some(9090));
    assert_eq!(port("reviews.default.svc.cluster.local.", 9080), Some(9080));
    assert_eq!(port("reviews.default:9090", 80), Some(9090));
    // No explicit port and none of the service's: its first port.
    assert_eq!(port("reviews.default.svc", 80), Some(9080));
    assert_eq!(port("reviews:80", 9080), None);
    // A VIP names one service port; an endpoint address or a stranger none.
    assert_eq!(port("10.96.0.10", 9090), Some(9090));
    assert_eq!(port("10.96.0.10:80", 9090), None);
    assert_eq!(port("10.88.0.5", 9080), None);
    assert_eq!(port("ratings", 9080), None);
    // One endpoint, two ports: its labels and identity are held once.
    let eps: Vec<_> = snap
        .clusters()
        .iter()
        .map(|c| c.endpoints[0].clone())
        .collect();
    assert_eq!(eps.len(), 2);
    assert!(std::sync::Arc::ptr_eq(&eps[0].labels, &eps[1].labels));
    assert_eq!(
        eps[1].labels.get("app").map(String::as_str),
        Some("reviews")
    );
    assert_eq!(eps[1].service_account.as_deref(), Some("bookinfo-reviews"));
    assert_ne!(eps[0].addr, eps[1].addr);
}

#[test]
fn a_view_with_an_unusable_resource_is_refused_whole_with_every_reason() {
    let mut v = view();
    let host = "reviews.default.svc.cluster.local";
    v.destination_rules.insert(
        host.into(),
        serde_yaml_ng::from_str(
            "host: reviews\ntrafficPolicy: {outlierDetection: {baseEjectionTime: 3x}}\nsubsets: [{name: v1, labels: {version: v1}}]\n",
        )
        .unwrap(),
    );
    v.virtual_services.insert(
        "default/reviews".into(),
        serde_yaml_ng::from_str(
            "hosts: [reviews]\nhttp:\n- timeout: 10\n  route: [{destination: {host: reviews}}]\n",
        )
        .unwrap(),
    );
    let e = Snapshot::compile(v, "default").unwrap_err();
    assert_eq!(e.version, 7);
    // The subset cluster repeats its rule's problem: reported once.
    assert_eq!(
        e.to_string(),
        "version 7 cannot be applied: \
         DestinationRule/reviews.default.svc.cluster.local: trafficPolicy.outlierDetection.baseEjectionTime (port 9080): unknown unit \"x\" in duration \"3x\"; \
         VirtualService/default/reviews: http[0].timeout: missing unit in duration \"10\""
    );
}

#[test]
fn lookups() {
    let s = Snapshot::compile(view(), "default").unwrap();
    assert_eq!(s.outbound_policy, OutboundPolicy::RegistryOnly);
    let c = s
        .cluster_for_dst("10.96.0.10:9080".parse().unwrap())
        .unwrap();
    assert_eq!(&*c.name, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(c.endpoints.len(), 1, "only ready endpoints");
    assert!(s
        .cluster_for_dst("10.88.0.5:9080".parse().unwrap())
        .is_some());
    // A pod's own address: that endpoint alone, routes off; a VIP is not pinned.
    let p = s
        .pinned_endpoint("10.88.0.5:9080".parse().unwrap())
        .unwrap();
    assert!(p.pinned);
    assert_eq!(p.name, c.name);
    let addrs: Vec<_> = p.endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["10.88.0.5:9080"]);
    assert!(s
        .pinned_endpoint("10.96.0.10:9080".parse().unwrap())
        .is_none());
    assert!(!c.pinned);
    for a in [
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default.svc.cluster.local:9080",
        "10.96.0.10:9080",
    ] {
        assert!(s.cluster_for_authority(a, 9080).is_some(), "{a}");
    }
    assert!(s.cluster_for_authority("reviews:9999", 9080).is_none());
    assert!(s.cluster_for_authority("ratings", 9080).is_none());
    // Short name only from the same namespace.
    let other = Snapshot::compile(view(), "shop").unwrap();
    assert!(other.cluster_for_authority("reviews", 9080).is_none());
    assert!(other
        .cluster_for_authority("reviews.default", 9080)
        .is_some());
}

#[test]
fn protocols() {
    assert_eq!(Protocol::from_istio("GRPC"), Protocol::Http2);
    assert_eq!(Protocol::from_istio("http"), Protocol::Http1);
    assert_eq!(Protocol::from_istio("MONGO"), Protocol::Tcp);
    assert_eq!(Protocol::from_istio("UNKNOWN"), Protocol::Unknown);
}
