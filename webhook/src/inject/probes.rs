//! Application probe rewriting: the kubelet cannot reach an app port through mTLS,
//! so HTTP/TCP/gRPC probes (and HTTP/TCP lifecycle hooks) are pointed at the
//! sidecar's status port (`/app-health/<container>/{livez,readyz,startupz}`,
//! `/app-lifecycle/<container>/{poststartz,prestopz}`), and the originals are handed
//! to the sidecar in `ISTIO_KUBE_APP_PROBERS`, exactly as Istio does.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// The env var holding the original probes, keyed by rewritten path.
pub const APP_PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";

const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];
const HOOKS: [(&str, &str); 2] = [("postStart", "poststartz"), ("preStop", "prestopz")];

/// A named port resolved against the container's own ports; numbers stay numbers.
fn resolve_port(container: &Value, port: &Value) -> Value {
    if let Some(name) = port.as_str() {
        if let Some(p) = container["ports"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["name"].as_str() == Some(name))
                .map(|p| p["containerPort"].clone())
        }) {
            return p;
        }
    }
    port.clone()
}

/// The prober Istio records for one handler (probe or lifecycle hook), or `None`
/// when it is not rewritable (exec, sleep) or already points at us.
fn prober(container: &Value, handler: &Value, path: &str, status_port: u16) -> Option<Value> {
    let mut out = Map::new();
    if let Some(h) = handler.get("httpGet").and_then(Value::as_object) {
        if h.get("path").and_then(Value::as_str) == Some(path)
            && h.get("port").and_then(Value::as_u64) == Some(u64::from(status_port))
        {
            return None;
        }
        let mut h = h.clone();
        let port = resolve_port(container, h.get("port").unwrap_or(&Value::Null));
        h.insert("port".into(), port);
        out.insert("httpGet".into(), Value::Object(h));
    } else if let Some(t) = handler.get("tcpSocket").and_then(Value::as_object) {
        let mut t = t.clone();
        let port = resolve_port(container, t.get("port").unwrap_or(&Value::Null));
        t.insert("port".into(), port);
        out.insert("tcpSocket".into(), Value::Object(t));
    } else if let Some(g) = handler.get("grpc").and_then(Value::as_object) {
        out.insert("grpc".into(), Value::Object(g.clone()));
    } else {
        return None;
    }
    if let Some(t) = handler.get("timeoutSeconds") {
        out.insert("timeoutSeconds".into(), t.clone());
    }
    Some(Value::Object(out))
}

fn point_at_status(handler: &mut Value, path: &str, status_port: u16) {
    let Some(h) = handler.as_object_mut() else {
        return;
    };
    // Istio keeps an explicit scheme, but as plain HTTP: the status port is not TLS.
    let had_scheme = h.get("httpGet").and_then(|g| g.get("scheme")).is_some();
    h.remove("tcpSocket");
    h.remove("grpc");
    let mut get = json!({"path": path, "port": status_port});
    if had_scheme {
        get["scheme"] = json!("HTTP");
    }
    h.insert("httpGet".into(), get);
}

/// Rewrites one app container's probes and hooks, recording the originals.
pub fn rewrite_container(c: &mut Value, status_port: u16, probers: &mut BTreeMap<String, Value>) {
    let name = c["name"].as_str().unwrap_or_default().to_string();
    let snapshot = c.clone();
    for (field, suffix) in PROBES {
        let path = format!("/app-health/{name}/{suffix}");
        if let Some(p) = c.get_mut(field).filter(|p| p.is_object()) {
            if let Some(orig) = prober(&snapshot, p, &path, status_port) {
                probers.insert(path.clone(), orig);
                point_at_status(p, &path, status_port);
            }
        }
    }
    for (hook, suffix) in HOOKS {
        let path = format!("/app-lifecycle/{name}/{suffix}");
        if let Some(h) = c
            .get_mut("lifecycle")
            .and_then(|l| l.get_mut(hook))
            .filter(|h| h.is_object())
        {
            if let Some(orig) = prober(&snapshot, h, &path, status_port) {
                probers.insert(path.clone(), orig);
                point_at_status(h, &path, status_port);
            }
        }
    }
}

/// Probers already recorded in an existing sidecar's env (a re-injection).
pub fn existing_probers(proxy: Option<&Value>) -> BTreeMap<String, Value> {
    proxy
        .and_then(|p| p["env"].as_array())
        .and_then(|env| {
            env.iter()
                .find(|e| e["name"].as_str() == Some(APP_PROBERS_ENV))
                .and_then(|e| e["value"].as_str())
        })
        .and_then(|v| serde_json::from_str::<BTreeMap<String, Value>>(v).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_http_tcp_and_hooks_once() {
        let mut c = json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"port": "http", "path": "/live"}, "periodSeconds": 3},
            "readinessProbe": {"tcpSocket": {"port": 9000}, "timeoutSeconds": 2},
            "startupProbe": {"exec": {"command": ["true"]}},
            "lifecycle": {"preStop": {"httpGet": {"port": 91}}},
        });
        let mut probers = BTreeMap::new();
        rewrite_container(&mut c, 15020, &mut probers);
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"path": "/app-health/app/livez", "port": 15020}, "periodSeconds": 3})
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"path": "/app-health/app/readyz", "port": 15020})
        );
        assert_eq!(c["startupProbe"], json!({"exec": {"command": ["true"]}}));
        assert_eq!(
            serde_json::to_string(&probers).unwrap(),
            r#"{"/app-health/app/livez":{"httpGet":{"path":"/live","port":8080}},"/app-health/app/readyz":{"tcpSocket":{"port":9000},"timeoutSeconds":2},"/app-lifecycle/app/prestopz":{"httpGet":{"port":91}}}"#
        );
        let before = c.clone();
        let mut again = BTreeMap::new();
        rewrite_container(&mut c, 15020, &mut again);
        assert_eq!(c, before);
        assert!(again.is_empty(), "already rewritten probes are left alone");
    }
}
