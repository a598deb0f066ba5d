//! Parsing the mesh config (defaults, a full file, unknown fields), validation
//! errors naming field and value, quantities, durations and the ProxyConfig overlay.

use super::*;

#[test]
fn empty_config_is_default_and_valid() {
    let c: MeshConfig = serde_yaml_ng::from_str("{}").unwrap();
    assert_eq!(c, MeshConfig::default());
    c.validate().unwrap();
    assert_eq!(c.redirect, RedirectDefaults::default());
}

#[test]
fn full_config_parses() {
    let y = r#"
images: {proxy: "reg/mesh:1.0", pullPolicy: Always, pullSecrets: [regcred]}
proxy:
  resources: {requests: {cpu: 10m}, limits: {memory: 64Mi, cpu: 2}}
  logLevel: debug
cni: {enabled: true}
nativeSidecars: "off"
holdApplicationUntilProxyStarts: true
rewriteAppHTTPProbers: false
trustDomain: example.org
agentAddress: agent.mesh.svc:15012
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
accessLogFile: /dev/stdout
accessLogEncoding: JSON
neverInjectSelector:
- matchExpressions: [{key: openshift.io/build.name, operator: Exists}]
alwaysInjectSelector:
- matchLabels: {inject: always}
policy: disabled
defaultConfig: {concurrency: 2, drainDuration: 23s, proxyMetadata: {FOO: bar}}
redirect: {proxyUid: 1500, interceptionMode: TPROXY, excludeInboundPorts: [22]}
"#;
    let c: MeshConfig = serde_yaml_ng::from_str(y).unwrap();
    c.validate().unwrap();
    assert_eq!(c.native_sidecars, NativeSidecars::Off);
    assert_eq!(
        c.proxy.resources.limits["cpu"], "2",
        "numbers are quantities too"
    );
    assert_eq!(c.redirect.proxy_uid, 1500);
    assert_eq!(c.redirect.status_port, Some(15020), "defaults kept");
    assert_eq!(c.outbound_traffic_policy.mode, OutboundMode::RegistryOnly);
    assert!(c.never_inject_selector[0].matches(&BTreeMap::from([(
        "openshift.io/build.name".into(),
        "x".into()
    )])));
    assert!(!c.always_inject_selector[0].matches(&BTreeMap::new()));
}

#[test]
fn unknown_fields_are_rejected_by_name() {
    for y in [
        "imagez: {}",
        "images: {proxyy: x}",
        "redirect: {proxyUID: 1}",
        "defaultConfig: {tracingg: {}}",
    ] {
        let e = serde_yaml_ng::from_str::<MeshConfig>(y)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{y}: {e}");
    }
}

#[test]
fn bad_values_name_field_and_value() {
    let cases: [(&str, &str, &str); 9] = [
        ("trustDomain: 'Bad Domain'", "trustDomain", "Bad Domain"),
        ("agentAddress: nohost", "agentAddress", "nohost"),
        ("agentAddress: 'a:99999'", "agentAddress", "a:99999"),
        (
            "proxy: {resources: {requests: {cpu: lots}}}",
            "proxy.resources.requests.cpu",
            "lots",
        ),
        ("proxy: {logLevel: loud}", "proxy.logLevel", "loud"),
        ("images: {proxy: ''}", "images.proxy", ""),
        (
            "defaultConfig: {drainDuration: soon}",
            "defaultConfig.drainDuration",
            "soon",
        ),
        (
            "neverInjectSelector: [{matchExpressions: [{key: a, operator: In}]}]",
            "neverInjectSelector[0].matchExpressions[0].values",
            "[]",
        ),
        (
            "rootNamespace: Istio_System",
            "rootNamespace",
            "Istio_System",
        ),
    ];
    for (y, field, value) in cases {
        let c: MeshConfig = serde_yaml_ng::from_str(y).unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, field, "{y}");
        assert_eq!(e.value, value, "{y}");
        assert!(e.to_string().contains(field), "{e}");
    }
}

#[test]
fn quantities_and_durations() {
    for q in ["100m", "1Gi", "2", "0.5", "1e3", "128974848"] {
        assert!(is_quantity(q), "{q}");
    }
    for q in ["", "lots", "1GB", "m"] {
        assert!(!is_quantity(q), "{q}");
    }
    for d in ["23s", "1m30s", "500ms", "1.5h"] {
        assert!(is_duration(d), "{d}");
    }
    for d in ["", "23", "s", "1x"] {
        assert!(!is_duration(d), "{d}");
    }
}

#[test]
fn proxy_config_overlay() {
    let base = ProxyConfig {
        concurrency: Some(2),
        proxy_metadata: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "1".into())]),
        ..Default::default()
    };
    let over = ProxyConfig {
        hold_application_until_proxy_starts: Some(true),
        proxy_metadata: BTreeMap::from([("B".into(), "2".into())]),
        ..Default::default()
    };
    let m = base.overlay(&over);
    assert_eq!(m.concurrency, Some(2));
    assert_eq!(m.hold_application_until_proxy_starts, Some(true));
    assert_eq!(m.proxy_metadata["B"], "2");
    assert_eq!(m.proxy_metadata["A"], "1");
}
