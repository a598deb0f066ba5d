//! `telemetry.istio.io` Telemetry: per-mesh, per-namespace and per-workload
//! tracing and access-logging settings, with Istio's field names. The Rust
//! type carries `v1`; `v1alpha1` has the same schema and is accepted by
//! [`crate::resource::parse_object`]. [`resolve`] merges the resources that
//! apply to one workload, in Istio's precedence, into what its proxy runs.
//!
//! `metrics` is accepted and kept but not applied (the proxy's Istio metrics
//! are fixed); `targetRefs` is accepted and reported as unsupported.

pub mod resolve;

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::networking::common::Extra;
use crate::security::LabelSelector;

/// API group of the telemetry resources.
pub const GROUP: &str = "telemetry.istio.io";
/// Versions served, storage version first.
pub const VERSIONS: [&str; 2] = ["v1", "v1alpha1"];

/// Spec of a `Telemetry`.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "telemetry.istio.io",
    version = "v1",
    kind = "Telemetry",
    plural = "telemetries",
    shortname = "telemetry",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", default)]
pub struct TelemetrySpec {
    pub selector: Option<LabelSelector>,
    /// Gateway-API policy attachment: accepted, not applied (a warning says so).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<TargetRef>,
    pub target_ref: Option<TargetRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
    /// Metric overrides: kept, not applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "any_objects")]
    pub metrics: Vec<serde_json::Value>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Schema of a kept-as-is object (structural: typed, unknown fields preserved).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "nullable": true, "x-kubernetes-preserve-unknown-fields": true})
}

fn any_objects(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let item = any_object(g);
    schemars::json_schema!({"type": "array", "items": item})
}

/// A policy target (`group`, `kind`, `name`, `namespace`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A provider named in `meshConfig.extensionProviders` (or Istio's built-in `envoy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderRef {
    pub name: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// One `tracing[]` entry.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Tracing {
    #[serde(rename = "match")]
    pub match_: Option<TracingMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// 0–100.
    pub random_sampling_percentage: Option<f64>,
    pub disable_span_reporting: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, TelemetryCustomTag>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// `match.mode`: `CLIENT`, `SERVER` or `CLIENT_AND_SERVER`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TracingMatch {
    pub mode: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A custom tag: exactly one of `literal`, `environment`, `header`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TelemetryCustomTag {
    pub literal: Option<TagLiteral>,
    pub environment: Option<TagSource>,
    pub header: Option<TagSource>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TagLiteral {
    pub value: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TagSource {
    pub name: String,
    pub default_value: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// One `accessLogging[]` entry.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AccessLogging {
    #[serde(rename = "match")]
    #[schemars(schema_with = "any_object")]
    pub match_: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    pub disabled: Option<bool>,
    pub filter: Option<AccessLogFilter>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AccessLogFilter {
    /// A CEL expression ([`crate::accessfilter`]).
    pub expression: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl TelemetryCustomTag {
    /// The proxy's form of the tag.
    pub fn to_view(&self) -> crate::tracing::CustomTag {
        use crate::tracing::{CustomTag, Literal, NamedSource};
        let src = |s: &TagSource| NamedSource {
            name: s.name.clone(),
            default_value: s.default_value.clone().unwrap_or_default(),
        };
        CustomTag {
            literal: self.literal.as_ref().map(|l| Literal {
                value: l.value.clone(),
            }),
            environment: self.environment.as_ref().map(src),
            header: self.header.as_ref().map(src),
        }
    }
}

/// One field that cannot work, naming the field path and value (as [`crate::tracing::TracingError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("telemetry field {field}: {value:?} {reason}")]
pub struct TelemetryError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

pub(crate) fn bad(field: &str, value: impl ToString, reason: &str) -> TelemetryError {
    TelemetryError {
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl TelemetrySpec {
    /// Checks what serde cannot, without the mesh config: percentages, custom
    /// tags, match modes, filter expressions. Field paths start at `spec`.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        for (i, t) in self.tracing.iter().enumerate() {
            let at = format!("spec.tracing[{i}]");
            if let Some(p) = t.random_sampling_percentage {
                if !(0.0..=100.0).contains(&p) || p.is_nan() {
                    return Err(bad(
                        &format!("{at}.randomSamplingPercentage"),
                        p,
                        "is not a percentage (0-100)",
                    ));
                }
            }
            if let Some(m) = t.match_.as_ref().and_then(|m| m.mode.as_ref()) {
                if !matches!(m.as_str(), "CLIENT" | "SERVER" | "CLIENT_AND_SERVER") {
                    return Err(bad(
                        &format!("{at}.match.mode"),
                        m,
                        "must be CLIENT, SERVER or CLIENT_AND_SERVER",
                    ));
                }
            }
            for (j, p) in t.providers.iter().enumerate() {
                if p.name.is_empty() {
                    return Err(bad(
                        &format!("{at}.providers[{j}].name"),
                        "",
                        "must name a provider",
                    ));
                }
            }
            for (name, tag) in &t.custom_tags {
                let f = format!("{at}.customTags.{name}");
                if name.is_empty() {
                    return Err(bad(&format!("{at}.customTags"), name, "is not a tag name"));
                }
                let n = [
                    tag.literal.is_some(),
                    tag.environment.is_some(),
                    tag.header.is_some(),
                ]
                .iter()
                .filter(|k| **k)
                .count();
                if n != 1 {
                    return Err(bad(
                        &f,
                        serde_json::to_string(tag).unwrap_or_default(),
                        "must set exactly one of literal, environment, header",
                    ));
                }
                for (kind, s) in [("environment", &tag.environment), ("header", &tag.header)] {
                    if s.as_ref().is_some_and(|s| s.name.is_empty()) {
                        return Err(bad(
                            &format!("{f}.{kind}.name"),
                            "",
                            "must name an environment variable or header",
                        ));
                    }
                }
            }
        }
        for (i, a) in self.access_logging.iter().enumerate() {
            let at = format!("spec.accessLogging[{i}]");
            for (j, p) in a.providers.iter().enumerate() {
                if p.name.is_empty() {
                    return Err(bad(
                        &format!("{at}.providers[{j}].name"),
                        "",
                        "must name a provider",
                    ));
                }
            }
            if let Some(f) = &a.filter {
                crate::accessfilter::Filter::parse(&f.expression).map_err(|e| {
                    bad(
                        &format!("{at}.filter.expression"),
                        &f.expression,
                        &format!(
                            "is not a supported CEL expression: {} at offset {}",
                            e.reason, e.at
                        ),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Parts accepted but not applied, as (field, why) warnings.
    pub fn unsupported(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.target_refs.is_empty() || self.target_ref.is_some() {
            out.push((
                "spec.targetRefs".into(),
                "policy attachment is not supported; use selector (ignored)".into(),
            ));
        }
        if !self.metrics.is_empty() {
            out.push((
                "spec.metrics".into(),
                "metric overrides are not applied (the proxy's Istio metrics are fixed)".into(),
            ));
        }
        for (i, t) in self.tracing.iter().enumerate() {
            if t.providers.len() > 1 {
                out.push((
                    format!("spec.tracing[{i}].providers"),
                    "a proxy exports to one collector: only the first provider is used".into(),
                ));
            }
            if let Some(m) = t.match_.as_ref().and_then(|m| m.mode.as_deref()) {
                if m != "CLIENT_AND_SERVER" {
                    out.push((
                        format!("spec.tracing[{i}].match.mode"),
                        format!("{m}: applied to both client and server spans"),
                    ));
                }
            }
        }
        for (i, a) in self.access_logging.iter().enumerate() {
            if a.providers.len() > 1 {
                out.push((
                    format!("spec.accessLogging[{i}].providers"),
                    "a proxy writes one access log: only the first provider is used".into(),
                ));
            }
            if a.match_.is_some() {
                out.push((
                    format!("spec.accessLogging[{i}].match"),
                    "applied to both client and server requests".into(),
                ));
            }
        }
        out
    }
}
