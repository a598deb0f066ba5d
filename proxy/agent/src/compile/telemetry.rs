//! Telemetry inputs of the snapshot: Telemetry resources whose providers exist
//! in the mesh config (the others are rejected, naming the provider), and the
//! `tracing` of each pod's `proxy.istio.io/config` annotation. The per-proxy
//! resolution itself is [`mesh_api::telemetry::resolve`], run by the views.

use super::accepted::Accepted;
use super::settings::Settings;
use crate::objects::KubeObject;
use crate::store::Store;
use mesh_api::meshconfig::MeshConfig;
use mesh_api::meshtracing::TracingConfig;
use mesh_api::syncapi::Rejection;
use std::collections::BTreeMap;

/// The mesh config Telemetry resolves against (Istio's defaults without a file).
pub fn mesh(settings: &Settings) -> std::borrow::Cow<'_, MeshConfig> {
    match &settings.mesh {
        Some(m) => std::borrow::Cow::Borrowed(m),
        None => std::borrow::Cow::Owned(MeshConfig {
            root_namespace: settings.root_namespace.clone(),
            ..MeshConfig::default()
        }),
    }
}

/// Keeps the Telemetries whose every provider resolves; rejects the others.
pub fn check(
    all: Vec<Accepted>,
    settings: &Settings,
    rejected: &mut Vec<Rejection>,
) -> Vec<Accepted> {
    let mesh = mesh(settings);
    all.into_iter()
        .filter(|a| {
            match mesh_api::telemetry::resolve::check_providers(&a.telemetry().spec, &mesh) {
                Ok(()) => true,
                Err(e) => {
                    rejected.push(Rejection {
                        resource: a.key.to_string(),
                        errors: vec![format!("error: {}: {e}", a.key)],
                    });
                    false
                }
            }
        })
        .collect()
}

/// (namespace, pod) → the pod annotation's tracing. An annotation that does not
/// parse, or whose tracing cannot compile, is reported and left out (the pod
/// gets the mesh-wide tracing).
pub fn pod_tracing(
    store: &Store,
    warnings: &mut Vec<String>,
) -> BTreeMap<(String, String), TracingConfig> {
    let mut out = BTreeMap::new();
    for e in store.of_kind("Pod") {
        let KubeObject::Pod(p) = &*e.object else {
            continue;
        };
        let Some(raw) = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(mesh_api::annotations::PROXY_CONFIG))
        else {
            continue;
        };
        let ns = p
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = p.metadata.name.clone().unwrap_or_default();
        match parse(raw) {
            Ok(Some(t)) => {
                out.insert((ns, name), t);
            }
            Ok(None) => {}
            Err(why) => warnings.push(format!(
                "warning: Pod/{ns}/{name}: annotation {}: {why} (ignored)",
                mesh_api::annotations::PROXY_CONFIG
            )),
        }
    }
    out
}

/// The `tracing` block of a `proxy.istio.io/config` value (YAML or JSON).
fn parse(raw: &str) -> Result<Option<TracingConfig>, String> {
    let v: serde_json::Value = serde_yaml_ng::from_str(raw).map_err(|e| e.to_string())?;
    let Some(t) = v.get("tracing") else {
        return Ok(None);
    };
    let t: TracingConfig =
        serde_json::from_value(t.clone()).map_err(|e| format!("tracing: {e}"))?;
    MeshConfig::default()
        .tracing_view(Some(&t))
        .map_err(|e| e.to_string())?;
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    #[test]
    fn pod_annotation_tracing_parses_and_bad_values_are_named() {
        let t = super::parse(
            "tracing:\n  sampling: 100\n  zipkin: {address: 'z:9411'}\nconcurrency: 2\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.sampling, Some(100.0));
        assert_eq!(super::parse("{\"concurrency\": 2}"), Ok(None));
        let e = super::parse("tracing: {sampling: 300}").unwrap_err();
        assert!(e.contains("sampling") && e.contains("300"), "{e}");
        let e = super::parse("tracing: {sampling: high}").unwrap_err();
        assert!(e.contains("high") || e.contains("sampling"), "{e}");
    }
}
