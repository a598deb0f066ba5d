//! Precedence, provider lookup and validation of Telemetry resources.

use super::*;
use crate::accesslog::Encoding;
use crate::resource::{parse_object, IstioResource};
use crate::tracing::CustomTag;

fn telemetry(yaml: &str) -> Telemetry {
    let v: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
    match parse_object(&v).unwrap().unwrap() {
        IstioResource::Telemetry(t) => *t,
        other => panic!("{other:?}"),
    }
}

fn mesh(yaml: &str) -> MeshConfig {
    let m: MeshConfig = serde_yaml_ng::from_str(yaml).unwrap();
    m.validate().unwrap();
    m
}

const MESH: &str = "\
extensionProviders:
- name: zk
  zipkin: {service: zipkin.obs, port: 9411}
- name: otel
  opentelemetry: {service: otel.obs, port: 4317}
- name: json-log
  envoyFileAccessLog:
    path: /dev/stdout
    logFormat: {labels: {code: '%RESPONSE_CODE%', path: '%REQ(:PATH)%'}}
- name: text-log
  envoyFileAccessLog: {path: /dev/stdout, logFormat: {text: \"T %RESPONSE_CODE%\\n\"}}
";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(
    m: &MeshConfig,
    all: &[Telemetry],
    ns: &str,
    l: &[(&str, &str)],
    pod: Option<&TracingConfig>,
) -> Resolved {
    let chain = applicable(all, &m.root_namespace, ns, &labels(l));
    let specs: Vec<&TelemetrySpec> = chain.iter().map(|t| &t.spec).collect();
    resolve(m, &specs, pod).unwrap()
}

fn all() -> Vec<Telemetry> {
    vec![
        telemetry(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\n\
             spec:\n  tracing:\n  - providers: [{name: zk}]\n    randomSamplingPercentage: 10\n    customTags: {mesh: {literal: {value: m}}, who: {literal: {value: mesh}}}\n",
        ),
        telemetry(
            "apiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {name: ns, namespace: shop}\n\
             spec:\n  tracing:\n  - randomSamplingPercentage: 100\n    customTags: {who: {literal: {value: shop}}}\n",
        ),
        telemetry(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: web, namespace: shop}\n\
             spec:\n  selector: {matchLabels: {app: web}}\n  tracing:\n  - randomSamplingPercentage: 0\n    providers: [{name: otel}]\n",
        ),
        // Another namespace's workload resource never applies to shop.
        telemetry(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: web, namespace: other}\n\
             spec:\n  selector: {matchLabels: {app: web}}\n  tracing:\n  - disableSpanReporting: true\n",
        ),
    ]
}

#[test]
fn more_specific_fields_win_and_tags_merge() {
    let m = mesh(MESH);
    let all = all();
    // Root only (another namespace without its own resource).
    let t = run(&m, &all, "books", &[("app", "web")], None)
        .tracing
        .unwrap();
    assert_eq!(t.sampling, 10.0);
    assert_eq!(
        t.provider,
        Some(TracingProvider::Zipkin {
            address: "zipkin.obs:9411".into()
        })
    );
    assert_eq!(t.custom_tags["who"], CustomTag::literal("mesh"));
    // Namespace over root: its sampling and tag win, the root's provider and
    // other tag stay.
    let t = run(&m, &all, "shop", &[("app", "client")], None)
        .tracing
        .unwrap();
    assert_eq!(t.sampling, 100.0);
    assert_eq!(t.custom_tags["who"], CustomTag::literal("shop"));
    assert_eq!(t.custom_tags["mesh"], CustomTag::literal("m"));
    assert_eq!(t.provider.as_ref().unwrap().address(), "zipkin.obs:9411");
    // Workload over namespace over root.
    let t = run(&m, &all, "shop", &[("app", "web")], None)
        .tracing
        .unwrap();
    assert_eq!(t.sampling, 0.0);
    assert_eq!(t.custom_tags["who"], CustomTag::literal("shop"));
    assert!(matches!(
        t.provider,
        Some(TracingProvider::Opentelemetry { ref address, .. }) if address == "otel.obs:4317"
    ));
    assert!(!t.disable_span_reporting);
    assert!(
        run(&m, &all, "other", &[("app", "web")], None)
            .tracing
            .unwrap()
            .disable_span_reporting
    );
}

#[test]
fn without_telemetry_the_mesh_config_decides_and_the_pod_annotation_applies() {
    let m = mesh("defaultConfig:\n  tracing: {sampling: 5, zipkin: {address: 'z:9411'}}\naccessLogFile: /dev/stdout\n");
    let r = run(&m, &[], "shop", &[], None);
    assert_eq!(r.tracing, m.tracing_view(None).unwrap());
    assert_eq!(r.access_log, m.access_log_view().unwrap());
    // The pod's proxy.istio.io/config tracing overrides defaultConfig.
    let pod: TracingConfig =
        serde_yaml_ng::from_str("sampling: 50\nzipkin: {address: 'pod-zipkin:9411'}\ncustomTags: {p: {literal: {value: x}}}\n").unwrap();
    let t = run(&m, &[], "shop", &[], Some(&pod)).tracing.unwrap();
    assert_eq!(t.sampling, 50.0);
    assert_eq!(t.provider.unwrap().address(), "pod-zipkin:9411");
    assert_eq!(t.custom_tags["p"], CustomTag::literal("x"));
    // A Telemetry's sampling wins over the pod's proxy config; the pod's
    // collector stays when the Telemetry names no provider.
    let ns = telemetry(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: ns, namespace: shop}\n\
         spec:\n  tracing: [{randomSamplingPercentage: 100}]\n",
    );
    let t = run(&m, &[ns], "shop", &[], Some(&pod)).tracing.unwrap();
    assert_eq!(t.sampling, 100.0);
    assert_eq!(t.provider.unwrap().address(), "pod-zipkin:9411");
    // enableTracing off and no Telemetry: no tracing.
    let off = mesh("enableTracing: false\n");
    assert_eq!(run(&off, &[], "shop", &[], None).tracing, None);
}

#[test]
fn access_logging_providers_filter_and_disable() {
    let m = mesh(MESH);
    let t = |ns: &str, name: &str, spec: &str| {
        telemetry(&format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
        ))
    };
    // No Telemetry, no accessLogFile: no log.
    assert_eq!(run(&m, &[], "shop", &[], None).access_log, None);
    let root = t(
        "istio-system",
        "mesh",
        "  accessLogging: [{providers: [{name: envoy}]}]\n",
    );
    let a = run(&m, std::slice::from_ref(&root), "shop", &[], None)
        .access_log
        .unwrap();
    assert_eq!(
        (a.encoding, a.format, a.filter),
        (Encoding::Text, None, None)
    );
    let ns = t(
        "shop",
        "ns",
        "  accessLogging: [{filter: {expression: 'response.code >= 400'}}]\n",
    );
    let a = run(&m, &[root.clone(), ns.clone()], "shop", &[], None)
        .access_log
        .unwrap();
    assert_eq!(a.filter.as_deref(), Some("response.code >= 400"));
    assert_eq!(a.encoding, Encoding::Text, "the root's provider stays");
    let web = t(
        "shop",
        "web",
        "  selector: {matchLabels: {app: web}}\n  accessLogging: [{providers: [{name: json-log}]}]\n",
    );
    let a = run(
        &m,
        &[root.clone(), ns.clone(), web.clone()],
        "shop",
        &[("app", "web")],
        None,
    )
    .access_log
    .unwrap();
    assert_eq!(a.encoding, Encoding::Json);
    assert_eq!(
        a.format.as_deref(),
        Some(r#"{"code":"%RESPONSE_CODE%","path":"%REQ(:PATH)%"}"#)
    );
    assert_eq!(a.filter.as_deref(), Some("response.code >= 400"));
    let off = t(
        "shop",
        "off",
        "  selector: {matchLabels: {app: web}}\n  accessLogging: [{disabled: true}]\n",
    );
    assert_eq!(
        run(&m, &[root, ns, off], "shop", &[("app", "web")], None).access_log,
        None
    );
    let text = t(
        "shop",
        "t",
        "  accessLogging: [{providers: [{name: text-log}]}]\n",
    );
    let a = run(&m, &[text], "shop", &[], None).access_log.unwrap();
    assert_eq!(a.format.as_deref(), Some("T %RESPONSE_CODE%\n"));
}

#[test]
fn unknown_or_wrong_kind_providers_are_named() {
    let m = mesh(MESH);
    let spec = |s: &str| -> TelemetrySpec { serde_yaml_ng::from_str(s).unwrap() };
    let e = check_providers(&spec("tracing: [{providers: [{name: jaeger}]}]"), &m).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("spec.tracing[0].providers[0].name", "jaeger")
    );
    assert!(e.to_string().contains("jaeger"), "{e}");
    let e = check_providers(&spec("tracing: [{providers: [{name: json-log}]}]"), &m).unwrap_err();
    assert!(e.reason.contains("not a zipkin"), "{e}");
    let e = check_providers(&spec("accessLogging: [{providers: [{name: zk}]}]"), &m).unwrap_err();
    assert_eq!(e.value, "zk");
    let e = check_providers(&spec("accessLogging: [{providers: [{name: nope}]}]"), &m).unwrap_err();
    assert_eq!(e.field, "spec.accessLogging[0].providers[0].name");
    check_providers(
        &spec(
            "accessLogging: [{providers: [{name: envoy}]}]\ntracing: [{providers: [{name: otel}]}]",
        ),
        &m,
    )
    .unwrap();
    let bad = "extensionProviders:\n- name: l\n  envoyFileAccessLog: {logFormat: {text: '%NOPE%'}}\ndefaultProviders: {accessLogging: [l]}\n";
    let e = serde_yaml_ng::from_str::<MeshConfig>(bad)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("%NOPE%"), "{e}");
}

#[test]
fn validation_names_field_and_value() {
    let spec = |s: &str| -> TelemetrySpec { serde_yaml_ng::from_str(s).unwrap() };
    for (y, field, value) in [
        (
            "tracing: [{randomSamplingPercentage: 101}]",
            "spec.tracing[0].randomSamplingPercentage",
            "101",
        ),
        (
            "tracing: [{randomSamplingPercentage: -1}]",
            "spec.tracing[0].randomSamplingPercentage",
            "-1",
        ),
        (
            "tracing: [{match: {mode: BOTH}}]",
            "spec.tracing[0].match.mode",
            "BOTH",
        ),
        (
            "tracing: [{customTags: {t: {literal: {value: a}, header: {name: h}}}}]",
            "spec.tracing[0].customTags.t",
            r#"{"literal":{"value":"a"},"header":{"name":"h"}}"#,
        ),
        (
            "tracing: [{customTags: {t: {}}}]",
            "spec.tracing[0].customTags.t",
            "{}",
        ),
        (
            "tracing: [{customTags: {t: {header: {name: ''}}}}]",
            "spec.tracing[0].customTags.t.header.name",
            "",
        ),
        (
            "accessLogging: [{filter: {expression: 'response.code >>= 400'}}]",
            "spec.accessLogging[0].filter.expression",
            "response.code >>= 400",
        ),
        (
            "accessLogging: [{providers: [{name: ''}]}]",
            "spec.accessLogging[0].providers[0].name",
            "",
        ),
    ] {
        let e = spec(y).validate().unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), (field, value), "{y}");
        assert!(e.to_string().contains(field), "{e}");
    }
    let ok = spec(
        "selector: {matchLabels: {app: web}}\ntargetRefs: [{kind: Gateway, name: g}]\nmetrics: [{providers: [{name: prometheus}]}]\n\
         tracing: [{match: {mode: SERVER}, randomSamplingPercentage: 0, disableSpanReporting: true, providers: [{name: a}, {name: b}],\n\
           customTags: {a: {environment: {name: POD, defaultValue: x}}, b: {header: {name: x-b}}}}]\n\
         accessLogging: [{filter: {expression: \"response.code >= 500 || request.headers['x-debug'] == '1'\"}}]\n",
    );
    ok.validate().unwrap();
    let warned: Vec<String> = ok.unsupported().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        warned,
        [
            "spec.targetRefs",
            "spec.metrics",
            "spec.tracing[0].providers",
            "spec.tracing[0].match.mode"
        ]
    );
    // Versions: v1 and v1alpha1 are served, v1beta1 is not.
    let v: serde_json::Value = serde_yaml_ng::from_str(
        "apiVersion: telemetry.istio.io/v1beta1\nkind: Telemetry\nmetadata: {name: t}\nspec: {}\n",
    )
    .unwrap();
    let e = parse_object(&v).unwrap_err().to_string();
    assert!(
        e.contains("telemetry.istio.io/v1, telemetry.istio.io/v1alpha1"),
        "{e}"
    );
}
