//! A pod's `spec.securityContext.sysctls`, applied in its network namespace as
//! the kubelet does. Only `net.*` sysctls are accepted: they are per network
//! namespace, so setting one cannot change the host or another pod. The
//! gateway pods rely on `net.ipv4.ip_unprivileged_port_start` (Istio's
//! automated deployment sets it to 0 so the router, UID 1337, binds port 80).

use serde_json::Value;

/// A sysctl a pod asks for that a local node will not set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SysctlError {
    #[error("sysctl {name:?} is not namespaced by the pod's network (only net.* sysctls are)")]
    NotNamespaced { name: String },
    #[error("sysctl {name:?} has an invalid value {value:?}")]
    BadValue { name: String, value: String },
}

/// `(name, value)` of each sysctl in the pod's security context, checked.
pub fn of_pod(pod: &Value) -> Result<Vec<(String, String)>, SysctlError> {
    let mut out = Vec::new();
    for s in pod["spec"]["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = s["name"].as_str().unwrap_or_default().to_string();
        let value = match &s["value"] {
            Value::String(v) => v.clone(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        let name_ok = name.starts_with("net.")
            && name.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !name_ok {
            return Err(SysctlError::NotNamespaced { name });
        }
        if value.is_empty() || value.chars().any(|c| c.is_control()) {
            return Err(SysctlError::BadValue { name, value });
        }
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(sysctls: Value) -> Value {
        json!({"spec": {"securityContext": {"sysctls": sysctls}}})
    }

    #[test]
    fn net_sysctls_are_taken_others_refused_by_name() {
        assert_eq!(of_pod(&json!({"spec": {}})).unwrap(), []);
        assert_eq!(
            of_pod(&pod(json!([
                {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"},
                {"name": "net.ipv4.ip_local_port_range", "value": "20000 30000"},
            ])))
            .unwrap(),
            [
                ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
                ("net.ipv4.ip_local_port_range".into(), "20000 30000".into()),
            ]
        );
        let e = of_pod(&pod(
            json!([{"name": "kernel.shm_rmid_forced", "value": "1"}]),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("\"kernel.shm_rmid_forced\""), "{e}");
        // A path escape is no sysctl name.
        assert!(of_pod(&pod(json!([{"name": "net/../../kernel/x", "value": "1"}]))).is_err());
        assert!(of_pod(&pod(json!([{"name": "net..x", "value": "1"}]))).is_err());
        let e = of_pod(&pod(
            json!([{"name": "net.core.somaxconn", "value": "1\n2"}]),
        ))
        .unwrap_err();
        assert!(matches!(e, SysctlError::BadValue { .. }), "{e}");
    }
}
