//! Tests of the mesh config file as the agent applies it:
//! [`crate::config::Config::with_mesh`] over the flags, compiled into every
//! proxy's view. Its own file because it spans the config, the mesh file, the
//! compiler and the views.

use crate::meshfile::parse;

/// A sidecar's and a gateway's view under `settings`.
fn views(settings: &std::sync::Arc<crate::compile::Settings>) -> Vec<mesh_api::syncapi::ProxyView> {
    let snap = crate::compile::compile(&Default::default(), settings, 1);
    [false, true]
        .map(|router| {
            let id = mesh_api::syncapi::ProxyIdentity {
                pod: "p".into(),
                namespace: "default".into(),
                router,
                ..Default::default()
            };
            crate::view::build(&snap, &id)
        })
        .into()
}

/// The mesh config's tracing reaches every proxy's view, through the
/// agent's settings (sidecars and gateways alike).
#[test]
fn tracing_compiles_into_the_views() {
    use mesh_api::tracing::TracingProvider;
    let m = parse(
        "enableTracing: true\ndefaultConfig:\n  tracing: {sampling: 10}\n\
         extensionProviders:\n- name: otel\n  opentelemetry: {service: otel.obs, port: 4318, http: {path: /v1/traces}}\n\
         defaultProviders: {tracing: [otel]}\n",
    )
    .unwrap();
    assert!(m.ignored.is_empty(), "{:?}", m.ignored);
    let flags = crate::config::Config::from_flags(Vec::<String>::new()).unwrap();
    let settings = std::sync::Arc::new(flags.with_mesh(&m).settings());
    let t = settings.tracing.clone().expect("tracing on");
    assert_eq!(t.sampling, 10.0);
    assert_eq!(
        t.provider,
        Some(TracingProvider::Opentelemetry {
            address: "otel.obs:4318".into(),
            http: true,
            path: "/v1/traces".into()
        })
    );
    for v in views(&settings) {
        assert_eq!(v.tracing.as_ref(), Some(&t));
    }
    let off = parse("enableTracing: false\n").unwrap();
    assert_eq!(flags.with_mesh(&off).settings().tracing, None);
    let e = parse("defaultConfig: {tracing: {sampling: -1}}")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("defaultConfig.tracing.sampling") && e.contains("-1"),
        "{e}"
    );
}

/// `accessLogFile` turns the access log on in every view, with its
/// encoding and format; a format with an unknown operator is refused
/// naming the operator.
#[test]
fn access_log_compiles_into_the_views() {
    use mesh_api::accesslog::{AccessLogView, Encoding};
    let m = parse(
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n\
         accessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'\n",
    )
    .unwrap();
    let flags = crate::config::Config::from_flags(Vec::<String>::new()).unwrap();
    let settings = std::sync::Arc::new(flags.with_mesh(&m).settings());
    let want = AccessLogView {
        encoding: Encoding::Json,
        format: Some(r#"{"code": "%RESPONSE_CODE%"}"#.into()),
        filter: None,
    };
    assert_eq!(settings.access_log.as_ref(), Some(&want));
    for v in views(&settings) {
        assert_eq!(v.access_log.as_ref(), Some(&want));
    }
    let off = parse("accessLogEncoding: JSON\n").unwrap();
    assert_eq!(flags.with_mesh(&off).settings().access_log, None);
    let e = parse("accessLogFile: /dev/stdout\naccessLogFormat: '%START_TIME% %NOT_AN_OP%'\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("accessLogFormat") && e.contains("%NOT_AN_OP%"),
        "{e}"
    );
}
