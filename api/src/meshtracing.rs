//! The tracing parts of Istio's mesh config — `enableTracing`,
//! `defaultConfig.tracing`, `extensionProviders` (`zipkin`, `opentelemetry`)
//! and `defaultProviders.tracing` — and their compilation into the
//! [`TracingView`] a proxy applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tracing::{CustomTag, TracingError, TracingProvider, TracingView};

/// `defaultConfig.tracing` (ProxyConfig), also settable per pod by the
/// `proxy.istio.io/config` annotation. Tracer kinds we do not export to
/// (`datadog`, `lightstep`, `stackdriver`, ...) are accepted and ignored, so an
/// Istio mesh config that names them still loads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TracingConfig {
    /// Percentage 0–100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinAddress>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_path_tag_length: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinAddress {
    /// `host:port` of the collector.
    pub address: String,
}

/// One of `meshConfig.extensionProviders` (the tracing kinds; others are kept
/// as opaque values so a mesh config with them still loads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ServicePort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OtelProvider>,
    /// Provider kinds this mesh does not trace with (envoyExtAuthzHttp, ...).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServicePort {
    pub service: String,
    pub port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OtelProvider {
    pub service: String,
    pub port: u32,
    /// Present: OTLP over HTTP to `http.path` (default `/v1/traces`); absent: gRPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<OtelHttp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OtelHttp {
    pub path: String,
}

/// `meshConfig.defaultProviders`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DefaultProviders {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    /// Access-log providers used where a Telemetry's `accessLogging` names none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

fn bad(field: &str, value: impl ToString, reason: &str) -> TracingError {
    TracingError {
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Istio's default `defaultConfig.tracing.sampling`.
pub const DEFAULT_SAMPLING: f64 = 1.0;

impl ExtensionProvider {
    /// The span collector this provider names, `None` if it is no tracing kind.
    pub fn tracing(&self, field: &str) -> Result<Option<TracingProvider>, TracingError> {
        let addr = |service: &str, port: u32, what: &str| {
            if service.is_empty() || service.contains(char::is_whitespace) {
                return Err(bad(
                    &format!("{field}.{what}.service"),
                    service,
                    "is not a host name",
                ));
            }
            if !(1..=65535).contains(&port) {
                return Err(bad(
                    &format!("{field}.{what}.port"),
                    port,
                    "is not a port (1-65535)",
                ));
            }
            Ok(format!("{service}:{port}"))
        };
        if let Some(z) = &self.zipkin {
            return Ok(Some(TracingProvider::Zipkin {
                address: addr(&z.service, z.port, "zipkin")?,
            }));
        }
        if let Some(o) = &self.opentelemetry {
            return Ok(Some(TracingProvider::Opentelemetry {
                address: addr(&o.service, o.port, "opentelemetry")?,
                http: o.http.is_some(),
                path: o
                    .http
                    .as_ref()
                    .map(|h| {
                        if h.path.is_empty() {
                            "/v1/traces".into()
                        } else {
                            h.path.clone()
                        }
                    })
                    .unwrap_or_default(),
            }));
        }
        Ok(None)
    }
}

/// Resolves one proxy's tracing: `None` when `enableTracing` is off. The
/// provider is `defaultProviders.tracing[0]` (looked up in `providers`) or
/// else the legacy `tracing.zipkin.address`; `tracing` is `defaultConfig.tracing`
/// with the pod's `proxy.istio.io/config` overlay already applied.
pub fn compile(
    enable: bool,
    tracing: Option<&TracingConfig>,
    providers: &[ExtensionProvider],
    defaults: &DefaultProviders,
) -> Result<Option<TracingView>, TracingError> {
    if !enable {
        return Ok(None);
    }
    let mut view = TracingView {
        sampling: tracing.and_then(|t| t.sampling).unwrap_or(DEFAULT_SAMPLING),
        custom_tags: tracing.map(|t| t.custom_tags.clone()).unwrap_or_default(),
        ..TracingView::default()
    };
    for (i, p) in providers.iter().enumerate() {
        p.tracing(&format!("extensionProviders[{i}]"))?;
    }
    if let Some(name) = defaults.tracing.first() {
        let (i, p) = providers
            .iter()
            .enumerate()
            .find(|(_, p)| &p.name == name)
            .ok_or_else(|| {
                bad(
                    "defaultProviders.tracing",
                    name,
                    "names no extensionProvider",
                )
            })?;
        view.provider = Some(
            p.tracing(&format!("extensionProviders[{i}]"))?
                .ok_or_else(|| {
                    bad(
                        "defaultProviders.tracing",
                        name,
                        "is not a zipkin or opentelemetry provider",
                    )
                })?,
        );
    } else if let Some(z) = tracing.and_then(|t| t.zipkin.as_ref()) {
        view.provider = Some(TracingProvider::Zipkin {
            address: z.address.clone(),
        });
    }
    view.validate("defaultConfig.tracing")?;
    Ok(Some(view))
}

impl TracingConfig {
    /// `over` wins field by field; custom tags are merged.
    pub fn overlay(&self, over: &TracingConfig) -> TracingConfig {
        let mut custom_tags = self.custom_tags.clone();
        custom_tags.extend(over.custom_tags.clone());
        TracingConfig {
            sampling: over.sampling.or(self.sampling),
            zipkin: over.zipkin.clone().or(self.zipkin.clone()),
            custom_tags,
            max_path_tag_length: over.max_path_tag_length.or(self.max_path_tag_length),
        }
    }
}

#[cfg(test)]
mod tests;
