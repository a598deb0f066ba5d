//! Finds fields the types do not know by walking the resource's JSON against the
//! schema generated from the types (the same one in the CRD), so the list of known
//! fields has exactly one source.

use super::report::Report;
use serde_json::Value;
use std::sync::OnceLock;

fn schemas() -> &'static std::collections::HashMap<&'static str, Value> {
    static S: OnceLock<std::collections::HashMap<&'static str, Value>> = OnceLock::new();
    S.get_or_init(|| {
        mesh_api::resource::KINDS
            .iter()
            .filter_map(|k| Some((*k, mesh_api::crd::spec_schema(k)?)))
            .collect()
    })
}

/// Warns about every field of `spec` that the kind's schema does not declare.
pub fn report(r: &mut Report<'_>, kind: &str, spec: &Value) {
    if let Some(schema) = schemas().get(kind) {
        walk(r, "spec", schema, spec);
    }
}

fn walk(r: &mut Report<'_>, path: &str, schema: &Value, v: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (k, child) in map {
                    let p = format!("{path}.{k}");
                    match props.get(k) {
                        Some(s) => walk(r, &p, s, child),
                        None => r.warn(p, child, "unknown field (kept, but this mesh ignores it)"),
                    }
                }
            } else if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for (k, child) in map {
                    walk(r, &format!("{path}[{k}]"), s, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, child) in items.iter().enumerate() {
                    walk(r, &format!("{path}[{i}]"), s, child);
                }
            }
        }
        _ => {}
    }
}
