//! The injected objects themselves: `istio-init` / `istio-validation`, the
//! `istio-proxy` sidecar and its volumes, built from a resolved [`Plan`]. Names,
//! ports, paths and the security posture are Istio's; the argv is ours
//! (`mesh-cni redirect <istio-iptables flags>`, `mesh-cni validate`, `mesh-proxy sidecar`).

use std::collections::BTreeMap;

use mesh_api::annotations::containers;
use mesh_api::meshconfig::Resources;
use mesh_api::{ports, InterceptionMode};
use serde_json::{json, Value};

/// Everything the templates need, resolved from mesh config + pod annotations.
#[derive(Debug, Clone)]
pub struct Plan {
    pub image: String,
    pub pull_policy: Option<&'static str>,
    pub flags: Vec<String>,
    pub interception: InterceptionMode,
    pub cni: bool,
    pub native: bool,
    pub hold: bool,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub status_port: Option<u16>,
    pub readiness_initial_delay: u32,
    pub readiness_period: u32,
    pub readiness_failure_threshold: u32,
    pub startup_probe: bool,
    pub resources: Resources,
    /// Env vars in order (name, value) plus downward-API ones added by the template.
    pub env: Vec<(String, String)>,
    pub user_volume_mounts: Vec<Value>,
}

/// Names of the volumes the sidecar gets (also listed in the status annotation).
pub const VOLUMES: [&str; 5] = [
    "istio-envoy",
    "istio-data",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
];

fn resources(r: &Resources) -> Value {
    let mut out = serde_json::Map::new();
    if !r.limits.is_empty() {
        out.insert("limits".into(), json!(r.limits));
    }
    if !r.requests.is_empty() {
        out.insert("requests".into(), json!(r.requests));
    }
    Value::Object(out)
}

fn with_pull_policy(mut c: Value, plan: &Plan) -> Value {
    if let Some(p) = plan.pull_policy {
        c["imagePullPolicy"] = json!(p);
    }
    c
}

/// `istio-init`: writes the redirect rules, so it needs NET_ADMIN/NET_RAW as root.
pub fn init_container(plan: &Plan) -> Value {
    let mut args = vec!["redirect".to_string()];
    args.extend(plan.flags.iter().cloned());
    with_pull_policy(
        json!({
            "name": containers::INIT,
            "image": plan.image,
            "command": ["mesh-cni"],
            "args": args,
            "resources": resources(&plan.resources),
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                "privileged": false,
                "readOnlyRootFilesystem": false,
                "runAsGroup": 0,
                "runAsNonRoot": false,
                "runAsUser": 0,
            },
        }),
        plan,
    )
}

/// `istio-validation`: the CNI plugin wrote the rules; check they are there, as the
/// proxy's user, with no privileges.
pub fn validation_container(plan: &Plan) -> Value {
    // `mesh-cni validate` takes only its own flags; the defaults (capture port
    // 15001) match what the CNI plugin writes.
    let args = vec!["validate".to_string()];
    with_pull_policy(
        json!({
            "name": containers::VALIDATION,
            "image": plan.image,
            "command": ["mesh-cni"],
            "args": args,
            "resources": resources(&plan.resources),
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "privileged": false,
                "readOnlyRootFilesystem": true,
                "runAsGroup": plan.proxy_gid,
                "runAsNonRoot": true,
                "runAsUser": plan.proxy_uid,
            },
        }),
        plan,
    )
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

fn ready_probe(plan: &Plan, period: u32, failure: u32, initial: u32) -> Value {
    let mut p = json!({
        "httpGet": {"path": "/healthz/ready", "port": ports::HEALTH},
        "periodSeconds": period,
        "failureThreshold": failure,
        "timeoutSeconds": 3,
    });
    if initial > 0 {
        p["initialDelaySeconds"] = json!(initial);
    }
    let _ = plan;
    p
}

/// The `istio-proxy` sidecar.
pub fn proxy_container(plan: &Plan) -> Value {
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
        field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
    ];
    env.extend(plan.env.iter().map(|(k, v)| json!({"name": k, "value": v})));
    let tproxy = plan.interception == InterceptionMode::Tproxy;
    let mut security = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "runAsGroup": plan.proxy_gid,
        "runAsNonRoot": true,
        "runAsUser": plan.proxy_uid,
    });
    if tproxy {
        // TPROXY needs IP_TRANSPARENT on its listeners: root with NET_ADMIN.
        security["capabilities"]["add"] = json!(["NET_ADMIN"]);
        security["runAsUser"] = json!(0);
        security["runAsNonRoot"] = json!(false);
    }
    let mut mounts = vec![
        json!({"mountPath": "/var/run/secrets/istio", "name": "istiod-ca-cert"}),
        json!({"mountPath": "/var/lib/istio/data", "name": "istio-data"}),
        json!({"mountPath": "/etc/istio/proxy", "name": "istio-envoy"}),
        json!({"mountPath": "/var/run/secrets/tokens", "name": "istio-token"}),
        json!({"mountPath": "/etc/istio/pod", "name": "istio-podinfo"}),
    ];
    mounts.extend(plan.user_volume_mounts.iter().cloned());
    let mut c = json!({
        "name": containers::PROXY,
        "image": plan.image,
        "command": ["mesh-proxy"],
        "args": [containers::MODE_SIDECAR],
        "env": env,
        "ports": [
            {"containerPort": ports::PROMETHEUS, "name": "http-envoy-prom", "protocol": "TCP"},
            {"containerPort": ports::HEALTH, "name": "http-health", "protocol": "TCP"},
            {"containerPort": ports::STATUS, "name": "http-status", "protocol": "TCP"},
        ],
        "resources": resources(&plan.resources),
        "securityContext": security,
        "volumeMounts": mounts,
    });
    if plan.status_port.is_some() {
        c["readinessProbe"] = ready_probe(
            plan,
            plan.readiness_period,
            plan.readiness_failure_threshold,
            plan.readiness_initial_delay,
        );
        if plan.startup_probe {
            c["startupProbe"] = ready_probe(plan, 1, 600, 0);
        }
    }
    if plan.native {
        c["restartPolicy"] = json!("Always");
    } else if plan.hold {
        // The app containers start only after this hook returns.
        c["lifecycle"] = json!({"postStart": {"exec": {"command": ["mesh-proxy", "wait"]}}});
    }
    with_pull_policy(c, plan)
}

/// `istio-proxy` as a gateway (Istio's `gateway` template): the pod's main
/// container running `mesh-proxy router`, no capture (so never TPROXY root), no
/// startup probe, resources only when annotations ask for them (the Deployment
/// brings its own). Ports: Istio's template declares only 15090; 15021 is named
/// `status-port` as on the gateway Service (load balancers health-check it), and
/// 15020 stays declared because the injected `prometheus.io/port` points there.
pub fn gateway_container(plan: &Plan, with_resources: bool) -> Value {
    let mut c = proxy_container(&Plan {
        interception: InterceptionMode::Redirect,
        native: false,
        hold: false,
        ..plan.clone()
    });
    let o = c.as_object_mut().expect("template is an object");
    o.remove("startupProbe");
    o.insert("args".into(), json!([containers::MODE_ROUTER]));
    o.insert(
        "ports".into(),
        json!([
            {"containerPort": ports::PROMETHEUS, "name": "http-envoy-prom", "protocol": "TCP"},
            {"containerPort": ports::HEALTH, "name": "status-port", "protocol": "TCP"},
            {"containerPort": ports::STATUS, "name": "http-status", "protocol": "TCP"},
        ]),
    );
    o.insert(
        "securityContext".into(),
        json!({"runAsUser": plan.proxy_uid, "runAsGroup": plan.proxy_gid}),
    );
    if !with_resources {
        o.insert("resources".into(), json!({}));
    }
    c
}

/// The sidecar's volumes (Istio's names and sources).
pub fn volumes() -> Vec<Value> {
    vec![
        json!({"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}),
        json!({"name": "istio-data", "emptyDir": {}}),
        json!({"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}}),
        json!({"name": "istio-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}},
        ]}}),
        json!({"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}}),
    ]
}

/// The pod's ports for `ISTIO_META_POD_PORTS`, Istio's JSON layout.
pub fn pod_ports(app_containers: &[Value]) -> String {
    let ports: Vec<Value> = app_containers
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .collect();
    serde_json::to_string(&ports).unwrap_or_else(|_| "[]".into())
}

/// Extra env from mesh `defaultConfig.proxyMetadata` (after our own, so they win
/// only where the proxy reads them).
pub fn metadata_env(meta: &BTreeMap<String, String>) -> Vec<(String, String)> {
    meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Gateways bind 80/443 as UID 1337: allow unprivileged low ports, as Istio does.
pub fn allow_low_ports(pod: &mut Value) {
    const SYSCTL: &str = "net.ipv4.ip_unprivileged_port_start";
    let sc = &mut pod["spec"]["securityContext"];
    if !sc.is_object() {
        *sc = json!({});
    }
    let sysctls = &mut sc["sysctls"];
    if !sysctls.is_array() {
        *sysctls = json!([]);
    }
    let list = sysctls.as_array_mut().expect("array ensured above");
    if !list.iter().any(|s| s["name"] == SYSCTL) {
        list.push(json!({"name": SYSCTL, "value": "0"}));
    }
}
