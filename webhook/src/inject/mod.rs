//! Sidecar injection proper: resolves a [`template::Plan`] from the mesh config and
//! the pod's annotations, then rewrites the pod JSON (containers, volumes, labels,
//! annotations, probes) and returns the RFC 6902 difference.
//!
//! Injection is a fixpoint: an injected pod injected again is unchanged (empty
//! patch). Containers we own that are already present (a user's `istio-proxy`
//! override, or a previous injection) are merged over the template, never doubled.

mod error;
pub mod merge;
pub mod meta;
pub mod probes;
mod read;
pub mod scrape;
pub mod template;

use std::collections::BTreeMap;

use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use mesh_api::annotations::{self, containers, sidecar};
use mesh_api::meshconfig::{is_quantity, MeshConfig, NativeSidecars};
use mesh_api::{InterceptionMode, RedirectParams};
use serde_json::{json, Value};

use error::bad_annotation;
pub use error::InjectError;
pub use meta::Workload;
use read::{
    bool_annotation, json_map_annotation, proxy_config_annotation, string_map, template_gateway,
    u32_annotation,
};
use template::Plan;

/// Facts about the cluster and the object that the pod alone does not carry.
#[derive(Debug, Clone, Default)]
pub struct InjectContext {
    /// Lowest kubelet `(major, minor)` among the nodes, for `nativeSidecars: auto`;
    /// `None` means unknown and is treated as new enough.
    pub min_kubelet_version: Option<(u32, u32)>,
    /// The workload the pod template belongs to (kube-inject knows it).
    pub workload: Option<Workload>,
    /// Namespace when the pod itself does not say (the admission request's).
    pub namespace: Option<String>,
}

/// The patch that injects `pod` (empty if it already is).
pub fn inject(pod: &Pod, mesh: &MeshConfig, ctx: &InjectContext) -> Result<Patch, InjectError> {
    let v = serde_json::to_value(pod).map_err(|e| InjectError::NotAPod(e.to_string()))?;
    inject_value(&v, mesh, ctx)
}

/// Same on raw pod JSON, so the patch addresses exactly the object we were sent.
pub fn inject_value(
    pod: &Value,
    mesh: &MeshConfig,
    ctx: &InjectContext,
) -> Result<Patch, InjectError> {
    let mut new = pod.clone();
    mutate(&mut new, mesh, ctx)?;
    Ok(json_patch::diff(pod, &new))
}

fn take_named(list: &mut Vec<Value>, name: &str) -> Option<Value> {
    let i = list.iter().position(|c| c["name"].as_str() == Some(name))?;
    Some(list.remove(i))
}

fn array(v: &Value, what: &str) -> Result<Vec<Value>, InjectError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) if a.iter().all(|c| c.is_object()) => Ok(a.clone()),
        _ => Err(InjectError::NotAPod(format!(
            "{what} is not a list of objects"
        ))),
    }
}

/// Rewrites `pod` in place into its injected form.
pub fn mutate(pod: &mut Value, mesh: &MeshConfig, ctx: &InjectContext) -> Result<(), InjectError> {
    if !pod.is_object() || !pod["spec"].is_object() {
        return Err(InjectError::NotAPod("object has no spec".into()));
    }
    if pod["metadata"].is_null() {
        pod["metadata"] = json!({});
    }
    let ann = string_map(&pod["metadata"]["annotations"], "annotations")?;
    let mut labels = string_map(&pod["metadata"]["labels"], "labels")?;
    let spec = &pod["spec"];
    let mut app = array(&spec["containers"], "spec.containers")?;
    let mut inits = array(&spec["initContainers"], "spec.initContainers")?;
    let mut pod_volumes = array(&spec["volumes"], "spec.volumes")?;
    // An injected pod whose only container was istio-proxy has it as a native
    // sidecar and no regular containers; anything else needs one.
    if app.is_empty() && !inits.iter().any(|c| c["name"] == containers::PROXY) {
        return Err(InjectError::NotAPod("spec.containers is empty".into()));
    }
    for (field, list) in [("containers", &app), ("initContainers", &inits)] {
        for (i, c) in list.iter().enumerate() {
            if c["name"].as_str().is_none_or(str::is_empty) {
                return Err(InjectError::NotAPod(format!(
                    "spec.{field}[{i}] has no name"
                )));
            }
        }
    }

    let gateway = template_gateway(&ann)?;
    // Our containers already in the pod: user overrides or a previous injection.
    let proxy_index = app.iter().position(|c| c["name"] == containers::PROXY);
    let user_proxy = match (
        take_named(&mut app, containers::PROXY),
        take_named(&mut inits, containers::PROXY),
    ) {
        (Some(c), _) | (None, Some(c)) => Some(c),
        (None, None) => None,
    };
    let user_init = take_named(&mut inits, containers::INIT);
    let user_validation = take_named(&mut inits, containers::VALIDATION);

    let proxy_config = mesh.default_config.overlay(&proxy_config_annotation(&ann)?);
    let mut defaults = mesh.redirect.clone();
    if let Some(mode) = proxy_config.interception_mode {
        defaults.interception_mode = mode;
    }
    // A user-chosen proxy UID must be the one the redirect rules exempt.
    let user_id = |field: &str| {
        user_proxy
            .as_ref()
            .and_then(|p| p["securityContext"][field].as_u64())
            .and_then(|u| u32::try_from(u).ok())
    };
    let mut proxy_gid = defaults.proxy_gid;
    if let Some(uid) = user_id("runAsUser") {
        defaults.proxy_uid = uid;
        defaults.proxy_gid = uid;
        proxy_gid = uid;
    }
    if let Some(gid) = user_id("runAsGroup") {
        proxy_gid = gid;
    }
    let params = RedirectParams::for_pod(&ann, &defaults)?;
    let status_port = match ann.get(sidecar::STATUS_PORT) {
        Some(v) if v.trim() == "0" => None,
        Some(v) => Some(annotations::parse_port(
            sidecar::STATUS_PORT,
            v,
            "statusPort",
        )?),
        None => defaults.status_port,
    };

    let native = match bool_annotation(&ann, sidecar::NATIVE_SIDECAR)? {
        _ if gateway => false,
        Some(b) => b,
        None => match mesh.native_sidecars {
            NativeSidecars::On => true,
            NativeSidecars::Off => false,
            NativeSidecars::Auto => ctx.min_kubelet_version.is_none_or(|v| v >= (1, 33)),
        },
    };
    let hold = proxy_config
        .hold_application_until_proxy_starts
        .unwrap_or(mesh.hold_application_until_proxy_starts);
    let rewrite = bool_annotation(&ann, sidecar::REWRITE_APP_HTTP_PROBERS)?
        .unwrap_or(mesh.rewrite_app_http_probers);

    // Istio: any resource annotation replaces the configured resources entirely.
    let resource_keys: [&str; 4] = [
        sidecar::PROXY_CPU,
        sidecar::PROXY_MEMORY,
        sidecar::PROXY_CPU_LIMIT,
        sidecar::PROXY_MEMORY_LIMIT,
    ];
    let has_resource_annotation = resource_keys.iter().any(|k| ann.contains_key(*k));
    let mut resources = if has_resource_annotation {
        mesh_api::meshconfig::Resources {
            requests: BTreeMap::new(),
            limits: BTreeMap::new(),
        }
    } else {
        mesh.proxy.resources.clone()
    };
    for (key, limit, name) in [
        (sidecar::PROXY_CPU, false, "cpu"),
        (sidecar::PROXY_MEMORY, false, "memory"),
        (sidecar::PROXY_CPU_LIMIT, true, "cpu"),
        (sidecar::PROXY_MEMORY_LIMIT, true, "memory"),
    ] {
        if let Some(q) = ann.get(key) {
            if !is_quantity(q) {
                return Err(bad_annotation(
                    key,
                    q,
                    "not a Kubernetes quantity (e.g. 100m, 128Mi)",
                ));
            }
            let map = if limit {
                &mut resources.limits
            } else {
                &mut resources.requests
            };
            map.insert(name.into(), q.trim().into());
        }
    }
    let image = match ann.get(sidecar::PROXY_IMAGE) {
        Some(i) if i.trim().is_empty() || i.contains(char::is_whitespace) => {
            return Err(bad_annotation(
                sidecar::PROXY_IMAGE,
                i,
                "not an image reference",
            ))
        }
        Some(i) => i.clone(),
        None => mesh.images.proxy.clone(),
    };

    // Probe rewriting, over app containers and other native sidecars.
    let mut probers = probes::existing_probers(user_proxy.as_ref());
    if let (true, Some(sp), false) = (rewrite, status_port, gateway) {
        for c in app.iter_mut() {
            probes::rewrite_container(c, sp, &mut probers);
        }
        for c in inits.iter_mut().filter(|c| c["restartPolicy"] == "Always") {
            probes::rewrite_container(c, sp, &mut probers);
        }
    }

    let namespace = pod["metadata"]["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
        .or(ctx.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let workload = ctx
        .workload
        .clone()
        .unwrap_or_else(|| meta::workload_of(pod));
    let app_names: Vec<&str> = app.iter().filter_map(|c| c["name"].as_str()).collect();

    let pc_json = serde_json::to_string(&proxy_config).unwrap_or_else(|_| "{}".into());
    let mut env: Vec<(String, String)> = vec![
        ("CA_ADDR".into(), mesh.agent_address.clone()),
        ("MESH_AGENT_ADDR".into(), mesh.agent_address.clone()),
        ("TRUST_DOMAIN".into(), mesh.trust_domain.clone()),
        ("PROXY_CONFIG".into(), pc_json),
        (
            "PROXY_LOG_LEVEL".into(),
            ann.get(sidecar::LOG_LEVEL)
                .cloned()
                .unwrap_or(mesh.proxy.log_level.clone()),
        ),
        (
            "PROXY_COMPONENT_LOG_LEVEL".into(),
            ann.get(sidecar::COMPONENT_LOG_LEVEL)
                .cloned()
                .unwrap_or(mesh.proxy.component_log_level.clone()),
        ),
        ("ISTIO_META_POD_PORTS".into(), template::pod_ports(&app)),
        ("ISTIO_META_APP_CONTAINERS".into(), app_names.join(",")),
        ("ISTIO_META_CLUSTER_ID".into(), mesh.cluster_id.clone()),
        (
            "ISTIO_META_INTERCEPTION_MODE".into(),
            params.interception_mode.to_string(),
        ),
        ("ISTIO_META_WORKLOAD_NAME".into(), workload.name.clone()),
        ("ISTIO_META_OWNER".into(), workload.owner_uri(&namespace)),
        ("ISTIO_META_MESH_ID".into(), mesh.trust_domain.clone()),
    ];
    if let Some(c) = proxy_config.concurrency {
        env.push(("PROXY_CONCURRENCY".into(), c.to_string()));
    }
    if let Some(limit) = ann.get(mesh_api::ratelimit::ANNOTATION) {
        // Refused here, at admission, rather than by a sidecar that will not start.
        mesh_api::ratelimit::parse(limit)?;
        env.push((mesh_api::ratelimit::ENV.into(), limit.clone()));
    }
    if !probers.is_empty() {
        let v = serde_json::to_string(&probers).unwrap_or_default();
        env.push((probes::APP_PROBERS_ENV.into(), v));
    }
    let scrape = scrape::plan(&ann, status_port)?;
    if let Some(app) = scrape.as_ref().and_then(|m| m.env.clone()) {
        env.push((scrape::ENV.into(), app));
    }
    env.extend(template::metadata_env(&proxy_config.proxy_metadata));

    let user_volumes = json_map_annotation(&ann, sidecar::USER_VOLUME)?;
    let user_mounts: Vec<Value> = json_map_annotation(&ann, sidecar::USER_VOLUME_MOUNT)?
        .into_iter()
        .map(|(name, mut m)| {
            if let Some(o) = m.as_object_mut() {
                o.insert("name".into(), json!(name));
            }
            m
        })
        .collect();

    let plan = Plan {
        image,
        pull_policy: mesh.images.pull_policy.map(|p| p.as_str()),
        flags: params.to_flags(),
        interception: params.interception_mode,
        cni: mesh.cni.enabled,
        native,
        hold,
        proxy_uid: defaults.proxy_uid,
        proxy_gid,
        status_port,
        readiness_initial_delay: u32_annotation(
            &ann,
            sidecar::READINESS_INITIAL_DELAY,
            mesh.proxy.readiness_initial_delay_seconds,
        )?,
        readiness_period: u32_annotation(
            &ann,
            sidecar::READINESS_PERIOD,
            mesh.proxy.readiness_period_seconds,
        )?,
        readiness_failure_threshold: u32_annotation(
            &ann,
            sidecar::READINESS_FAILURE_THRESHOLD,
            mesh.proxy.readiness_failure_threshold,
        )?,
        startup_probe: mesh.proxy.startup_probe,
        resources,
        env,
        user_volume_mounts: user_mounts,
    };

    let mut proxy = if gateway {
        template::gateway_container(&plan, has_resource_annotation)
    } else {
        template::proxy_container(&plan)
    };
    if let Some(u) = &user_proxy {
        merge::merge_container(&mut proxy, u);
        // The recomputed env wins over a stale copy from a previous injection.
        set_env(&mut proxy, &plan.env);
    }
    if plan.interception == InterceptionMode::Tproxy && !gateway {
        // TPROXY sockets need root (IP_TRANSPARENT), whatever the user asked for;
        // a gateway captures nothing and keeps its non-root user.
        proxy["securityContext"]["runAsUser"] = json!(0);
        proxy["securityContext"]["runAsNonRoot"] = json!(false);
    }
    if native {
        proxy["restartPolicy"] = json!("Always");
    } else if let Some(o) = proxy.as_object_mut() {
        o.remove("restartPolicy");
    }

    let init = if gateway || params.interception_mode == InterceptionMode::None {
        None
    } else if plan.cni {
        let mut c = template::validation_container(&plan);
        if let Some(u) = &user_validation {
            merge::merge_container(&mut c, u);
        }
        Some(c)
    } else {
        let mut c = template::init_container(&plan);
        if let Some(u) = &user_init {
            merge::merge_container(&mut c, u);
        }
        Some(c)
    };

    let mut added_inits: Vec<String> = Vec::new();
    let mut added_containers: Vec<String> = Vec::new();
    if let Some(c) = &init {
        added_inits.push(c["name"].as_str().unwrap_or_default().to_string());
    }
    if native {
        added_inits.push(containers::PROXY.into());
        let mut front: Vec<Value> = init.into_iter().collect();
        front.push(proxy);
        front.append(&mut inits);
        inits = front;
    } else {
        inits.extend(init);
        added_containers.push(containers::PROXY.into());
        match proxy_index {
            // A gateway's own istio-proxy keeps its place.
            Some(i) if gateway => app.insert(i.min(app.len()), proxy),
            _ if hold => app.insert(0, proxy),
            _ => app.push(proxy),
        }
    }

    // Volumes: ours, then the user's from annotations, each added once.
    let mut added_volumes: Vec<String> = Vec::new();
    let extra = user_volumes.into_iter().map(|(name, mut v)| {
        if let Some(o) = v.as_object_mut() {
            o.insert("name".into(), json!(name));
        }
        v
    });
    for v in template::volumes().into_iter().chain(extra) {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        if !pod_volumes
            .iter()
            .any(|p| p["name"].as_str() == Some(&name))
        {
            pod_volumes.push(v);
        }
        added_volumes.push(name);
    }

    let mut pull_secrets = array(&pod["spec"]["imagePullSecrets"], "spec.imagePullSecrets")?;
    let mut added_secrets: Vec<String> = Vec::new();
    // The mesh's secrets come first, as in Istio's template merge.
    for (i, s) in mesh.images.pull_secrets.iter().enumerate() {
        if !pull_secrets.iter().any(|p| p["name"].as_str() == Some(s)) {
            pull_secrets.insert(i.min(pull_secrets.len()), json!({"name": s}));
        }
        added_secrets.push(s.clone());
    }

    if gateway {
        template::allow_low_ports(pod);
    }
    let spec = pod["spec"].as_object_mut().expect("checked above");
    spec.insert("containers".into(), Value::Array(app.clone()));
    if inits.is_empty() {
        spec.remove("initContainers");
    } else {
        spec.insert("initContainers".into(), Value::Array(inits));
    }
    spec.insert("volumes".into(), Value::Array(pod_volumes));
    if !pull_secrets.is_empty() {
        spec.insert("imagePullSecrets".into(), Value::Array(pull_secrets));
    }

    // Labels and annotations: ours are added, the user's are never overwritten.
    let (canon_name, canon_rev) = meta::canonical(&labels, &workload.name);
    if !gateway {
        labels
            .entry(annotations::TLS_MODE.into())
            .or_insert(annotations::TLS_MODE_ISTIO.into());
    }
    for (k, v) in [
        (annotations::CANONICAL_NAME, canon_name),
        (annotations::CANONICAL_REVISION, canon_rev),
    ] {
        labels.entry(k.into()).or_insert(v);
    }
    let mut ann = ann;
    let first_app = app
        .iter()
        .filter_map(|c| c["name"].as_str())
        .find(|n| *n != containers::PROXY)
        .map(String::from);
    if let (Some(first), false) = (first_app, gateway) {
        ann.entry(annotations::DEFAULT_CONTAINER.into())
            .or_insert(first.clone());
        ann.entry("kubectl.kubernetes.io/default-logs-container".into())
            .or_insert(first);
    }
    if !mesh.revision.is_empty() {
        ann.entry(annotations::REV.into())
            .or_insert(mesh.revision.clone());
    }
    // The one exception: scraping points at the status port (the metrics
    // merge), the app's settings went to the proxy's env above.
    for (k, v) in scrape.into_iter().flat_map(|m| m.annotations) {
        ann.insert(k.into(), v);
    }
    let none_if_empty = |v: Vec<String>| if v.is_empty() { Value::Null } else { json!(v) };
    let status = json!({
        "initContainers": none_if_empty(added_inits),
        "containers": none_if_empty(added_containers),
        "volumes": none_if_empty(added_volumes),
        "imagePullSecrets": none_if_empty(added_secrets),
        "revision": mesh.revision,
    });
    ann.insert(sidecar::STATUS.into(), status.to_string());

    let meta = pod["metadata"]
        .as_object_mut()
        .ok_or_else(|| InjectError::NotAPod("metadata is not an object".into()))?;
    meta.insert("labels".into(), json!(labels));
    meta.insert("annotations".into(), json!(ann));
    Ok(())
}

/// Sets each `(name, value)` env var on `c`, replacing same-named ones.
fn set_env(c: &mut Value, vars: &[(String, String)]) {
    let over: Vec<Value> = vars
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    merge::merge_container(c, &json!({ "env": over }));
}

#[cfg(test)]
mod rate_limit_tests {
    use super::*;

    fn pod(limit: &str) -> Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop",
                         "annotations": {mesh_api::ratelimit::ANNOTATION: limit}},
            "spec": {"containers": [{"name": "web", "image": "web"}]}
        })
    }

    #[test]
    fn the_rate_limit_annotation_reaches_the_sidecar_or_is_refused() {
        let mesh = MeshConfig::default();
        let mut p = pod("10/s,burst=20");
        mutate(&mut p, &mesh, &InjectContext::default()).unwrap();
        let proxy = p["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(p["spec"]["initContainers"].as_array().into_iter().flatten())
            .find(|c| c["name"] == "istio-proxy")
            .unwrap()
            .clone();
        let env = proxy["env"].as_array().unwrap();
        assert!(env
            .iter()
            .any(|e| e["name"] == mesh_api::ratelimit::ENV && e["value"] == "10/s,burst=20"));
        let e = mutate(&mut pod("lots"), &mesh, &InjectContext::default()).unwrap_err();
        assert!(e.to_string().contains("lots"), "{e}");
    }
}
