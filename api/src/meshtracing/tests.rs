//! Tests of the tracing a mesh config compiles to. A file of its own, as
//! they build a `MeshConfig`, which itself uses this module's types.

use super::*;

fn mesh(yaml: &str) -> crate::meshconfig::MeshConfig {
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn legacy_zipkin_and_sampling_compile_into_the_view() {
    let m = mesh("defaultConfig:\n  tracing:\n    sampling: 25\n    datadog: {address: dd:8126}\n    zipkin: {address: zipkin.istio-system:9411}\n    customTags:\n      team: {literal: {value: shop}}\n");
    let v = m.tracing_view(None).unwrap().unwrap();
    assert_eq!(v.sampling, 25.0);
    assert_eq!(
        v.provider,
        Some(TracingProvider::Zipkin {
            address: "zipkin.istio-system:9411".into()
        })
    );
    assert_eq!(v.custom_tags["team"], CustomTag::literal("shop"));
    // The pod annotation's sampling wins.
    let over = TracingConfig {
        sampling: Some(100.0),
        ..Default::default()
    };
    assert_eq!(
        m.tracing_view(Some(&over)).unwrap().unwrap().sampling,
        100.0
    );
    assert_eq!(
        mesh("enableTracing: false\n").tracing_view(None).unwrap(),
        None
    );
    // Nothing configured: context propagates, 1 % default, no collector.
    let d = mesh("{}").tracing_view(None).unwrap().unwrap();
    assert_eq!((d.sampling, d.provider), (1.0, None));
}

#[test]
fn extension_providers_and_bad_values() {
    let m = mesh("extensionProviders:\n- name: otel\n  opentelemetry: {service: otel.obs.svc.cluster.local, port: 4317}\n- name: zk\n  zipkin: {service: zipkin.obs, port: 9411}\n- name: authz\n  envoyExtAuthzHttp: {service: a, port: 1}\ndefaultProviders:\n  tracing: [zk]\n");
    assert_eq!(
        m.tracing_view(None).unwrap().unwrap().provider,
        Some(TracingProvider::Zipkin {
            address: "zipkin.obs:9411".into()
        })
    );
    let e = mesh("defaultProviders: {tracing: [nope]}\n")
        .validate()
        .unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("defaultProviders.tracing", "nope")
    );
    let e = mesh("defaultConfig: {tracing: {sampling: 150}}\n")
        .validate()
        .unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("defaultConfig.tracing.sampling", "150")
    );
    let e = mesh("extensionProviders:\n- name: z\n  zipkin: {service: z, port: 0}\n")
        .validate()
        .unwrap_err();
    assert_eq!(e.field, "extensionProviders[0].zipkin.port");
}
