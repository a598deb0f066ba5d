//! Telemetry resources in the agent: each proxy's view carries the tracing and
//! access log its own workload resolves to (root namespace, namespace,
//! workload selector, pod annotation), views differ per workload, a Telemetry
//! naming an unknown provider is rejected naming it, and a mesh without any
//! Telemetry gets exactly the mesh config's settings.

mod common;

use common::store;

use mesh_agent::compile::{compile, Settings};
use mesh_agent::view;
use mesh_api::syncapi::ProxyIdentity;
use std::sync::Arc;

const MESH: &str = "\
rootNamespace: istio-system
defaultConfig:
  tracing: {sampling: 3}
extensionProviders:
- name: zk
  zipkin: {service: 10.0.0.1, port: 9411}
";

const TELEMETRY: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{providers: [{name: zk}], randomSamplingPercentage: 100, customTags: {team: {literal: {value: shop}}}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: shop}
spec:
  selector: {matchLabels: {app: quiet}}
  tracing: [{randomSamplingPercentage: 0}]
  accessLogging: [{providers: [{name: envoy}], filter: {expression: 'response.code >= 400'}}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: broken, namespace: shop}
spec:
  selector: {matchLabels: {app: other}}
  tracing: [{providers: [{name: jaeger}]}]
---
apiVersion: v1
kind: Pod
metadata:
  name: annotated-0
  namespace: books
  labels: {app: annotated}
  annotations:
    proxy.istio.io/config: |
      tracing:
        sampling: 42
        customTags: {pod: {literal: {value: p}}}
spec:
  containers: [{name: app, image: x}]
";

fn proxy(ns: &str, pod: &str, app: &str) -> ProxyIdentity {
    ProxyIdentity {
        pod: pod.into(),
        namespace: ns.into(),
        service_account: "default".into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ips: vec![],
        router: false,
    }
}

fn settings(mesh_yaml: &str) -> Arc<Settings> {
    let m = mesh_agent::meshfile::parse(mesh_yaml).unwrap();
    let flags = mesh_agent::config::Config::from_flags(Vec::<String>::new()).unwrap();
    Arc::new(flags.with_mesh(&m).settings())
}

#[test]
fn each_proxy_gets_its_own_resolved_telemetry() {
    let s = compile(&store(&[("t.yaml", TELEMETRY)]), &settings(MESH), 3);
    // The unknown provider is refused, naming the resource and the provider.
    assert_eq!(s.rejected.len(), 1, "{:?}", s.rejected);
    let r = &s.rejected[0];
    assert_eq!(r.resource, "Telemetry/shop/broken");
    assert!(
        r.errors[0].contains("jaeger") && r.errors[0].contains("spec.tracing[0].providers[0].name"),
        "{r:?}"
    );

    let web = view::build(&s, &proxy("shop", "web-0", "web"));
    let t = web.tracing.unwrap();
    assert_eq!(t.sampling, 100.0);
    assert_eq!(t.provider.unwrap().address(), "10.0.0.1:9411");
    assert_eq!(
        t.custom_tags["team"].literal.as_ref().unwrap().value,
        "shop"
    );
    assert_eq!(web.access_log, None, "no access log configured for web");

    let quiet = view::build(&s, &proxy("shop", "quiet-0", "quiet"));
    let t = quiet.tracing.unwrap();
    assert_eq!(t.sampling, 0.0, "the workload Telemetry wins");
    assert!(t.custom_tags.contains_key("team"), "the root's tags stay");
    let a = quiet.access_log.unwrap();
    assert_eq!(a.filter.as_deref(), Some("response.code >= 400"));
    // Different resolutions, different cache keys.
    assert_ne!(
        view::key(&s, &proxy("shop", "web-0", "web")),
        view::key(&s, &proxy("shop", "quiet-0", "quiet"))
    );

    // The pod annotation's tracing: its tags apply, but the root Telemetry's
    // sampling wins over the pod's proxy config.
    let ann = view::build(&s, &proxy("books", "annotated-0", "annotated"));
    let t = ann.tracing.unwrap();
    assert_eq!(t.sampling, 100.0);
    assert_eq!(t.custom_tags["pod"].literal.as_ref().unwrap().value, "p");
    assert_ne!(
        view::key(&s, &proxy("books", "annotated-0", "annotated")),
        view::key(&s, &proxy("books", "plain-0", "annotated"))
    );
}

#[test]
fn without_telemetry_the_mesh_config_applies_and_the_pod_annotation_overrides_it() {
    let pod_only: String = TELEMETRY
        .split("---\n")
        .filter(|d| d.contains("kind: Pod"))
        .collect();
    let st = settings(MESH);
    let s = compile(&store(&[("p.yaml", &pod_only)]), &st, 4);
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    let plain = view::build(&s, &proxy("books", "plain-0", "x"));
    assert_eq!(plain.tracing, st.tracing, "unchanged mesh-config behaviour");
    assert_eq!(plain.tracing.unwrap().sampling, 3.0);
    let ann = view::build(&s, &proxy("books", "annotated-0", "annotated"));
    assert_eq!(
        ann.tracing.unwrap().sampling,
        42.0,
        "pod proxy config over defaultConfig"
    );
}
