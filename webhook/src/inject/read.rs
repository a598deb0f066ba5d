//! Reading a pod's annotations into typed values, each failure an error naming the
//! annotation and its value. Traffic annotations are not read here: they belong to
//! `mesh_api::RedirectParams::for_pod`, shared with the CNI plugin.

use std::collections::BTreeMap;

use mesh_api::annotations::{self, sidecar};
use mesh_api::meshconfig::ProxyConfig;
use serde_json::Value;

use super::error::{bad_annotation, InjectError};

pub fn string_map(v: &Value, what: &str) -> Result<BTreeMap<String, String>, InjectError> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(InjectError::NotAPod(format!(
                    "metadata.{what}[{k:?}] is {other}, not a string"
                ))),
            })
            .collect(),
        other => Err(InjectError::NotAPod(format!(
            "metadata.{what} is {other}, not a map"
        ))),
    }
}

/// `proxy.istio.io/config`: YAML or JSON ProxyConfig. Fields we do not model are
/// ignored (Istio has many more); a value that is not a mapping is an error.
pub fn proxy_config_annotation(ann: &BTreeMap<String, String>) -> Result<ProxyConfig, InjectError> {
    let Some(raw) = ann.get(annotations::PROXY_CONFIG) else {
        return Ok(ProxyConfig::default());
    };
    let bad = |r: String| bad_annotation(annotations::PROXY_CONFIG, raw, r);
    let v: Value = serde_yaml_ng::from_str(raw).map_err(|e| bad(e.to_string()))?;
    let Value::Object(mut m) = v else {
        return Err(bad("expected a ProxyConfig mapping".into()));
    };
    const KNOWN: [&str; 6] = [
        "concurrency",
        "drainDuration",
        "terminationDrainDuration",
        "holdApplicationUntilProxyStarts",
        "interceptionMode",
        "proxyMetadata",
    ];
    m.retain(|k, _| KNOWN.contains(&k.as_str()));
    let pc: ProxyConfig =
        serde_json::from_value(Value::Object(m)).map_err(|e| bad(e.to_string()))?;
    pc.validate(annotations::PROXY_CONFIG)
        .map_err(|e| bad(e.to_string()))?;
    Ok(pc)
}

pub fn bool_annotation(
    ann: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<bool>, InjectError> {
    ann.get(key)
        .map(|v| annotations::parse_bool(key, v))
        .transpose()
        .map_err(Into::into)
}

pub fn u32_annotation(
    ann: &BTreeMap<String, String>,
    key: &str,
    default: u32,
) -> Result<u32, InjectError> {
    Ok(match ann.get(key) {
        Some(v) => annotations::parse_u32(key, v)?,
        None => default,
    })
}

/// A user-supplied map of name -> object (userVolume / userVolumeMount).
pub fn json_map_annotation(
    ann: &BTreeMap<String, String>,
    key: &str,
) -> Result<Vec<(String, Value)>, InjectError> {
    let Some(raw) = ann.get(key) else {
        return Ok(Vec::new());
    };
    let m: BTreeMap<String, Value> = serde_json::from_str(raw).map_err(|e| {
        bad_annotation(
            key,
            raw,
            format!("expected a JSON object of name to spec: {e}"),
        )
    })?;
    Ok(m.into_iter().collect())
}

/// `inject.istio.io/templates`: `sidecar` (the default) or `gateway`; Istio's other
/// templates (grpc-agent, grpc-simple, custom ones) are not implemented and are
/// refused rather than silently replaced by a sidecar.
pub fn template_gateway(ann: &BTreeMap<String, String>) -> Result<bool, InjectError> {
    let Some(raw) = ann.get(sidecar::TEMPLATES) else {
        return Ok(false);
    };
    let mut gateway = false;
    for t in raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match t {
            "sidecar" => {}
            "gateway" => gateway = true,
            other => {
                return Err(bad_annotation(
                    sidecar::TEMPLATES,
                    raw,
                    format!(
                    "injection template {other:?} is not supported (supported: sidecar, gateway)"
                ),
                ))
            }
        }
    }
    Ok(gateway)
}
