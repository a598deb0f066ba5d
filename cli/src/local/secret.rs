//! Secrets given to `meshctl local` (`kubernetes.io/tls` and `Opaque`, what a
//! gateway's `credentialName` names): checked as the API server checks them,
//! `stringData` folded into base64 `data` as the API server stores it, and
//! written for the agent's files source readable by root only. Their bytes are
//! never printed: messages name the Secret, its type and its keys.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Why a Secret document is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("data[{0}]: not valid base64")]
    NotBase64(String),
    #[error("{field}[{key}]: must be a string")]
    NotString { field: &'static str, key: String },
    #[error("{field}: must be a map of key to value")]
    NotAMap { field: &'static str },
    #[error("key {0:?}: a valid Secret key consists of alphanumerics, '-', '_' or '.'")]
    BadKey(String),
    #[error("type {ty}: data[{key}]: Required value")]
    Required { ty: String, key: &'static str },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

pub const TLS_TYPE: &str = "kubernetes.io/tls";

fn entries<'a>(
    v: &'a Value,
    field: &'static str,
) -> Result<Vec<(&'a String, &'a str)>, SecretError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let s = v.as_str().ok_or_else(|| SecretError::NotString {
                    field,
                    key: k.clone(),
                })?;
                Ok((k, s))
            })
            .collect(),
        _ => Err(SecretError::NotAMap { field }),
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k != "."
        && k != ".."
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The Secret as the API server would store it: `type` (default `Opaque`),
/// `data` with every value base64 (`stringData` entries win, encoded).
pub fn normalize(v: Value) -> Result<Value, SecretError> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    for (k, s) in entries(&v["data"], "data")? {
        // Whitespace is allowed in YAML block scalars of base64.
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        engine
            .decode(&compact)
            .map_err(|_| SecretError::NotBase64(k.clone()))?;
        data.insert(k.clone(), compact);
    }
    for (k, s) in entries(&v["stringData"], "stringData")? {
        data.insert(k.clone(), engine.encode(s.as_bytes()));
    }
    if let Some(bad) = data.keys().find(|k| !valid_key(k)) {
        return Err(SecretError::BadKey(bad.clone()));
    }
    let ty = v["type"].as_str().unwrap_or("Opaque").to_string();
    if ty == TLS_TYPE {
        for key in ["tls.crt", "tls.key"] {
            if !data.contains_key(key) {
                return Err(SecretError::Required { ty, key });
            }
        }
    }
    let mut meta = Map::new();
    for k in ["name", "namespace", "labels", "annotations"] {
        if !v["metadata"][k].is_null() {
            meta.insert(k.into(), v["metadata"][k].clone());
        }
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": ty,
        "data": data,
    }))
}

/// `secret/NAME (NS) configured, type T, keys [..]`: what `apply` prints.
pub fn describe(v: &Value) -> String {
    let keys: Vec<&str> = v["data"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    format!(
        "secret/{} ({}) configured, type {}, keys [{}]",
        v["metadata"]["name"].as_str().unwrap_or_default(),
        v["metadata"]["namespace"].as_str().unwrap_or_default(),
        v["type"].as_str().unwrap_or_default(),
        keys.join(", ")
    )
}

/// Writes a Secret atomically with mode 0600: key material is for the agent
/// (root) only, not for the pods' users who can read the rest of the folder.
pub fn write(path: &Path, v: &Value) -> Result<(), SecretError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| SecretError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let text = serde_yaml_ng::to_string(v).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(yaml: &str) -> Value {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn string_data_is_stored_as_base64_data() {
        let v = normalize(secret(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: cred, namespace: istio-system}\ntype: kubernetes.io/tls\nstringData: {tls.crt: CERT, tls.key: KEY}\ndata: {ca.crt: Q0E=}\n",
        ))
        .unwrap();
        assert_eq!(v["data"]["tls.crt"], "Q0VSVA==");
        assert_eq!(v["data"]["tls.key"], "S0VZ");
        assert_eq!(v["data"]["ca.crt"], "Q0E=");
        assert!(v.get("stringData").is_none());
        let d = describe(&v);
        assert_eq!(
            d,
            "secret/cred (istio-system) configured, type kubernetes.io/tls, keys [ca.crt, tls.crt, tls.key]"
        );
        assert!(!d.contains("S0VZ") && !d.contains("KEY]"), "{d}");
        let opaque = normalize(secret(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: c}\ndata: {cert: Q0E=}\n",
        ))
        .unwrap();
        assert_eq!(opaque["type"], "Opaque");
    }

    #[test]
    fn refused_like_the_api_server() {
        let e = normalize(secret(
            "metadata: {name: c}\ntype: kubernetes.io/tls\nstringData: {tls.crt: CERT}\n",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(e, "type kubernetes.io/tls: data[tls.key]: Required value");
        let e = normalize(secret("metadata: {name: c}\ndata: {tls.crt: '!!notb64'}\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "data[tls.crt]: not valid base64");
        let e = normalize(secret("metadata: {name: c}\nstringData: {a/b: x}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"a/b\""), "{e}");
        let e = normalize(secret("metadata: {name: c}\ndata: [1]\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "data: must be a map of key to value");
    }

    #[test]
    fn written_for_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets").join("ns_c.yaml");
        let v = normalize(secret("metadata: {name: c}\nstringData: {k: v}\n")).unwrap();
        write(&p, &v).unwrap();
        write(&p, &v).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back["data"]["k"], "dg==");
    }
}
