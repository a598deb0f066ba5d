//! Which Telemetry resources apply to a workload and what they add up to, in
//! Istio's precedence: the root namespace's selector-less resource, then the
//! workload namespace's selector-less one, then one in its namespace whose
//! selector matches its labels. A more specific resource's fields win where it
//! sets them (custom tags merge by name). Providers are looked up by name in
//! `meshConfig.extensionProviders`; `envoy` is Istio's built-in stdout access
//! log. Without any Telemetry the mesh config decides alone, as before.
//!
//! Tracing starts from the proxy config (`defaultConfig.tracing` with the pod's
//! `proxy.istio.io/config` tracing over it); a Telemetry's
//! `randomSamplingPercentage` wins over both.

use std::collections::BTreeMap;

use super::{bad, Telemetry, TelemetryError, TelemetrySpec};
use crate::accesslog::{AccessLogView, Encoding};
use crate::meshconfig::MeshConfig;
use crate::meshtracing::{ExtensionProvider, TracingConfig};
use crate::tracing::{TracingProvider, TracingView};

/// Istio's built-in access-log provider: the default line on stdout.
pub const ENVOY_PROVIDER: &str = "envoy";

/// What one workload's proxy runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub tracing: Option<TracingView>,
    pub access_log: Option<AccessLogView>,
}

fn selector(t: &TelemetrySpec) -> Option<&BTreeMap<String, String>> {
    t.selector
        .as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty())
}

/// The resources that apply to a workload, least specific first: root
/// namespace, namespace, workload. `all` in a stable order (the first of
/// several candidates at one level wins, as Istio picks the oldest).
pub fn applicable<'t>(
    all: impl IntoIterator<Item = &'t Telemetry> + Clone,
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'t Telemetry> {
    let ns_of = |t: &Telemetry| {
        t.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    };
    let root = all
        .clone()
        .into_iter()
        .find(|t| ns_of(t) == root_namespace && selector(&t.spec).is_none());
    let ns = if namespace == root_namespace {
        None
    } else {
        all.clone()
            .into_iter()
            .find(|t| ns_of(t) == namespace && selector(&t.spec).is_none())
    };
    let workload = all.into_iter().find(|t| {
        ns_of(t) == namespace
            && selector(&t.spec).is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    });
    [root, ns, workload].into_iter().flatten().collect()
}

/// `envoyFileAccessLog` of an extension provider, if it is one.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct FileAccessLog {
    path: String,
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
struct LogFormat {
    text: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

/// The access log a named provider writes (the proxy writes every one to its
/// stdout, the container log).
fn access_log_provider(
    mesh: &MeshConfig,
    name: &str,
    field: &str,
) -> Result<AccessLogView, TelemetryError> {
    let Some(p) = mesh.extension_providers.iter().find(|p| p.name == name) else {
        if name == ENVOY_PROVIDER {
            return Ok(AccessLogView {
                encoding: Encoding::Text,
                format: None,
                filter: None,
            });
        }
        return Err(bad(field, name, "names no meshConfig extensionProvider"));
    };
    let Some(raw) = p.other.get("envoyFileAccessLog") else {
        return Err(bad(
            field,
            name,
            "is not an envoyFileAccessLog provider (the only access-log kind supported)",
        ));
    };
    let f: FileAccessLog = serde_json::from_value(raw.clone())
        .map_err(|e| bad(field, name, &format!("has a bad envoyFileAccessLog: {e}")))?;
    let _ = &f.path; // Always the proxy's stdout (see above).
    let lf = f.log_format.unwrap_or_default();
    let view = match (lf.text, lf.labels) {
        (Some(t), _) => AccessLogView {
            encoding: Encoding::Text,
            format: Some(t).filter(|t| !t.trim().is_empty()),
            filter: None,
        },
        (None, Some(l)) => AccessLogView {
            encoding: Encoding::Json,
            format: Some(serde_json::to_string(&l).unwrap_or_default()).filter(|_| !l.is_empty()),
            filter: None,
        },
        (None, None) => AccessLogView {
            encoding: Encoding::Text,
            format: None,
            filter: None,
        },
    };
    crate::accesslog::compile(&view)
        .map_err(|e| bad(field, name, &format!("has a bad logFormat: {e}")))?;
    Ok(view)
}

fn tracing_provider(
    providers: &[ExtensionProvider],
    name: &str,
    field: &str,
) -> Result<TracingProvider, TelemetryError> {
    let (i, p) = providers
        .iter()
        .enumerate()
        .find(|(_, p)| p.name == name)
        .ok_or_else(|| bad(field, name, "names no meshConfig extensionProvider"))?;
    p.tracing(&format!("extensionProviders[{i}]"))
        .map_err(|e| bad(&e.field, e.value, &e.reason))?
        .ok_or_else(|| bad(field, name, "is not a zipkin or opentelemetry provider"))
}

/// Checks every provider a Telemetry names against the mesh config: the
/// resource is refused (naming the provider) when one is unknown or of the
/// wrong kind.
pub fn check_providers(spec: &TelemetrySpec, mesh: &MeshConfig) -> Result<(), TelemetryError> {
    for (i, t) in spec.tracing.iter().enumerate() {
        for (j, p) in t.providers.iter().enumerate() {
            let f = format!("spec.tracing[{i}].providers[{j}].name");
            tracing_provider(&mesh.extension_providers, &p.name, &f)?;
        }
    }
    for (i, a) in spec.access_logging.iter().enumerate() {
        for (j, p) in a.providers.iter().enumerate() {
            let f = format!("spec.accessLogging[{i}].providers[{j}].name");
            access_log_provider(mesh, &p.name, &f)?;
        }
    }
    Ok(())
}

/// Checks the mesh config's `defaultProviders.accessLogging` names.
pub fn check_mesh(mesh: &MeshConfig) -> Result<(), TelemetryError> {
    for (i, name) in mesh.default_providers.access_logging.iter().enumerate() {
        access_log_provider(mesh, name, &format!("defaultProviders.accessLogging[{i}]"))?;
    }
    Ok(())
}

/// What `chain` ([`applicable`], least specific first) and the pod's
/// `proxy.istio.io/config` tracing give one workload.
pub fn resolve(
    mesh: &MeshConfig,
    chain: &[&TelemetrySpec],
    pod_tracing: Option<&TracingConfig>,
) -> Result<Resolved, TelemetryError> {
    Ok(Resolved {
        tracing: tracing(mesh, chain, pod_tracing)?,
        access_log: access_log(mesh, chain)?,
    })
}

fn from_tracing_error(e: crate::tracing::TracingError) -> TelemetryError {
    bad(&e.field, e.value, &e.reason)
}

fn tracing(
    mesh: &MeshConfig,
    chain: &[&TelemetrySpec],
    pod: Option<&TracingConfig>,
) -> Result<Option<TracingView>, TelemetryError> {
    let entries: Vec<(usize, &super::Tracing)> = chain
        .iter()
        .flat_map(|t| t.tracing.iter().enumerate())
        .collect();
    if entries.is_empty() {
        return mesh.tracing_view(pod).map_err(from_tracing_error);
    }
    // A Telemetry that configures tracing turns it on even with enableTracing off.
    let mut view = crate::meshtracing::compile(
        true,
        mesh.proxy_tracing(pod).as_ref(),
        &mesh.extension_providers,
        &mesh.default_providers,
    )
    .map_err(from_tracing_error)?
    .unwrap_or_default();
    for (i, t) in entries {
        if let Some(p) = t.providers.first() {
            let f = format!("spec.tracing[{i}].providers[0].name");
            view.provider = Some(tracing_provider(&mesh.extension_providers, &p.name, &f)?);
        }
        if let Some(s) = t.random_sampling_percentage {
            view.sampling = s;
        }
        if let Some(d) = t.disable_span_reporting {
            view.disable_span_reporting = d;
        }
        for (k, tag) in &t.custom_tags {
            view.custom_tags.insert(k.clone(), tag.to_view());
        }
    }
    view.validate("telemetry.tracing")
        .map_err(from_tracing_error)?;
    Ok(Some(view))
}

fn access_log(
    mesh: &MeshConfig,
    chain: &[&TelemetrySpec],
) -> Result<Option<AccessLogView>, TelemetryError> {
    let legacy = || {
        mesh.access_log_view()
            .map_err(|e| bad("accessLogFormat", &mesh.access_log_format, &e.to_string()))
    };
    let entries: Vec<(usize, &super::AccessLogging)> = chain
        .iter()
        .flat_map(|t| t.access_logging.iter().enumerate())
        .collect();
    if entries.is_empty() {
        return legacy();
    }
    let (mut providers, mut disabled, mut filter) = (None, false, None);
    for (i, a) in entries {
        if !a.providers.is_empty() {
            providers = Some((i, &a.providers));
        }
        if let Some(d) = a.disabled {
            disabled = d;
        }
        if let Some(f) = &a.filter {
            filter = Some(f.expression.clone()).filter(|e| !e.trim().is_empty());
        }
    }
    if disabled {
        return Ok(None);
    }
    let mut view = match providers {
        Some((i, ps)) => access_log_provider(
            mesh,
            &ps[0].name,
            &format!("spec.accessLogging[{i}].providers[0].name"),
        )?,
        None => match mesh.default_providers.access_logging.first() {
            Some(name) => access_log_provider(mesh, name, "defaultProviders.accessLogging")?,
            // No provider anywhere: the mesh config's log, else Istio's `envoy`.
            None => legacy()?.unwrap_or(AccessLogView {
                encoding: Encoding::Text,
                format: None,
                filter: None,
            }),
        },
    };
    view.filter = filter;
    Ok(Some(view))
}

#[cfg(test)]
mod tests;
