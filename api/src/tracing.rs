//! Distributed tracing as one proxy applies it: the provider its spans go to,
//! the sampling percentage, custom tags and whether spans are reported at all.
//! The agent resolves mesh config (`defaultConfig.tracing`,
//! `extensionProviders`, `enableTracing`, the `proxy.istio.io/config`
//! annotation) into one [`TracingView`] per proxy; the proxy only applies it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A bad tracing value: which field, which value, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tracing field {field}: {value:?} {reason}")]
pub struct TracingError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

fn bad(field: &str, value: impl ToString, reason: &str) -> TracingError {
    TracingError {
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// One proxy's resolved tracing configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TracingView {
    /// Where spans are sent; `None`: trace context is still propagated, no span is exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<TracingProvider>,
    /// Percentage (0–100) of requests without an upstream decision that are sampled.
    pub sampling: f64,
    /// Tag name → where its value comes from.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Propagate context but report no span (Telemetry `disableSpanReporting`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disable_span_reporting: bool,
}

impl Default for TracingView {
    fn default() -> Self {
        // Istio's default sampling percentage (meshConfig.defaultConfig.tracing.sampling).
        TracingView {
            provider: None,
            sampling: 1.0,
            custom_tags: BTreeMap::new(),
            disable_span_reporting: false,
        }
    }
}

/// A span collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum TracingProvider {
    /// Zipkin v2 JSON, POSTed to `http://<address>/api/v2/spans`.
    Zipkin { address: String },
    /// OpenTelemetry OTLP to `address` (`host:port`), over gRPC or, when
    /// `http` is set, HTTP/protobuf to `path`.
    #[serde(rename_all = "camelCase")]
    Opentelemetry {
        address: String,
        #[serde(default)]
        http: bool,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        path: String,
    },
}

impl TracingProvider {
    pub fn address(&self) -> &str {
        match self {
            TracingProvider::Zipkin { address }
            | TracingProvider::Opentelemetry { address, .. } => address,
        }
    }
}

/// Where a custom tag's value comes from (Istio's `customTags` entry: exactly
/// one of `literal`, `environment`, `header`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub literal: Option<Literal>,
    /// The proxy's environment variable `name`, or `defaultValue`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<NamedSource>,
    /// The request header `name`, or `defaultValue`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Literal {
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedSource {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

impl CustomTag {
    pub fn literal(value: &str) -> CustomTag {
        CustomTag {
            literal: Some(Literal {
                value: value.into(),
            }),
            ..Default::default()
        }
    }
}

/// Whether `s` is `host:port` with a port of 1–65535.
pub fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((h, p)) => {
            !h.is_empty()
                && !h.contains(char::is_whitespace)
                && p.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

impl TracingView {
    /// Checks what serde cannot: the percentage's range, the provider address,
    /// tag names. `prefix` names where the view came from in the error.
    pub fn validate(&self, prefix: &str) -> Result<(), TracingError> {
        if !(0.0..=100.0).contains(&self.sampling) {
            return Err(bad(
                &format!("{prefix}.sampling"),
                self.sampling,
                "is not a percentage (0-100)",
            ));
        }
        if let Some(p) = &self.provider {
            if !is_host_port(p.address()) {
                return Err(bad(
                    &format!("{prefix}.provider.address"),
                    p.address(),
                    "is not host:port",
                ));
            }
        }
        for (name, tag) in &self.custom_tags {
            if name.is_empty() {
                return Err(bad(
                    &format!("{prefix}.customTags"),
                    name,
                    "is not a tag name",
                ));
            }
            let kinds = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(bad(
                    &format!("{prefix}.customTags.{name}"),
                    format!("{tag:?}"),
                    "must set exactly one of literal, environment, header",
                ));
            }
            for src in [&tag.environment, &tag.header].into_iter().flatten() {
                if src.name.is_empty() {
                    return Err(bad(
                        &format!("{prefix}.customTags.{name}.name"),
                        &src.name,
                        "must name an environment variable or header",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_bad_values() {
        let v: TracingView = serde_json::from_str(
            r#"{"provider":{"kind":"zipkin","address":"zipkin.istio-system:9411"},"sampling":50,
                "customTags":{"team":{"literal":{"value":"a"}},"env":{"environment":{"name":"POD","defaultValue":"x"}}}}"#,
        )
        .unwrap();
        assert_eq!(v.sampling, 50.0);
        assert_eq!(v.validate("t"), Ok(()));
        let back: TracingView = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
        let e = TracingView {
            sampling: 101.0,
            ..v.clone()
        }
        .validate("t")
        .unwrap_err();
        assert_eq!(e.field, "t.sampling");
        assert_eq!(e.value, "101");
        let e = TracingView {
            provider: Some(TracingProvider::Zipkin {
                address: "zipkin".into(),
            }),
            ..v
        }
        .validate("t")
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("t.provider.address", "zipkin")
        );
    }
}
