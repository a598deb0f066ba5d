//! Bringing up one pod of a local mesh as a kubelet would: the spec goes through
//! the real injector, the sandbox through the CNI chain, `istio-init` (init mode)
//! or `istio-validation` (CNI mode) runs as injected, `istio-proxy` runs the real
//! `mesh-proxy` with the injected env (downward API resolved here), and each app
//! container is replaced by the echo app on its container ports, with the pod's
//! identity and labels. The Pod object, with its IP and readiness, is written to
//! the agent's folder as the API server would hold it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use mesh_webhook::inject::meta::Workload;
use mesh_webhook::{decide, Decision, InjectContext, MeshConfig, Pod};
use serde_json::{json, Value};

use super::manifest::{container_ports, PodSpec};
use super::node;
use super::proc;
use super::state::{write_file, PodState, RunDir, State};

const APP_UID: u32 = 1000;
const PROXY_CONTAINER: &str = "istio-proxy";

/// Pod objects for the agent and the CNI plugin live here, one file per pod.
pub fn pod_file(run: &RunDir, ns: &str, name: &str) -> PathBuf {
    run.pods_dir().join(format!("{ns}_{name}.yaml"))
}

/// Runs the injector on `spec` with the namespace labels known to the mesh.
/// Returns the pod as admitted and whether it got a sidecar (with the reason if not).
pub fn admit(
    state: &State,
    spec: &PodSpec,
    mesh: &MeshConfig,
) -> anyhow::Result<(Value, Result<(), String>)> {
    let ns_labels = state
        .namespaces
        .get(&spec.namespace)
        .cloned()
        .unwrap_or_default();
    let typed: Pod = serde_json::from_value(spec.pod.clone())
        .with_context(|| format!("pod {}/{} is not a valid Pod", spec.namespace, spec.name))?;
    match decide(&typed, Some(&ns_labels), mesh) {
        Decision::Skip(why) => Ok((spec.pod.clone(), Err(format!("{why:?}")))),
        Decision::Inject => {
            let ctx = InjectContext {
                min_kubelet_version: None,
                workload: spec.owner.as_ref().map(|(api, kind, name)| Workload {
                    api_version: api.clone(),
                    kind: kind.clone(),
                    name: name.clone(),
                }),
                namespace: Some(spec.namespace.clone()),
            };
            let mut pod = spec.pod.clone();
            mesh_webhook::inject::mutate(&mut pod, mesh, &ctx)
                .with_context(|| format!("injecting pod {}/{}", spec.namespace, spec.name))?;
            Ok((pod, Ok(())))
        }
    }
}

fn labels(pod: &Value) -> BTreeMap<String, String> {
    pod["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn run_as(pod: &Value, c: &Value, default: u32) -> u32 {
    c["securityContext"]["runAsUser"]
        .as_u64()
        .or_else(|| pod["spec"]["securityContext"]["runAsUser"].as_u64())
        .map(|u| u as u32)
        .unwrap_or(default)
}

/// Writes the Pod object with the status a kubelet reports.
fn publish(run: &RunDir, pod: &Value, ps: &PodState) -> anyhow::Result<()> {
    let mut obj = pod.clone();
    if let Some(ip) = &ps.ip {
        obj["status"] = json!({
            "phase": "Running",
            "hostIP": node::GATEWAY,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ps.ready { "True" } else { "False" }}],
        });
    }
    let yaml = serde_yaml_ng::to_string(&obj)?;
    write_file(&pod_file(run, &ps.namespace, &ps.name), &yaml)
}

/// The downward API for one env entry of a container.
fn env_value(pod: &Value, ps: &PodState, e: &Value) -> Option<String> {
    if let Some(v) = e["value"].as_str() {
        return Some(v.to_string());
    }
    if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
        let ip = ps.ip.clone().unwrap_or_default();
        return Some(match path {
            "metadata.name" => ps.name.clone(),
            "metadata.namespace" => ps.namespace.clone(),
            "metadata.uid" => ps.container_id[..32].to_string(),
            "status.podIP" | "status.podIPs" => ip,
            "status.hostIP" | "status.hostIPs" => node::GATEWAY.to_string(),
            "spec.serviceAccountName" => pod["spec"]["serviceAccountName"].as_str()?.to_string(),
            "spec.nodeName" => "local".to_string(),
            p => {
                let (field, key) = p.split_once("['")?;
                let key = key.strip_suffix("']")?;
                match field {
                    "metadata.labels" => pod["metadata"]["labels"][key].as_str()?.to_string(),
                    "metadata.annotations" => {
                        pod["metadata"]["annotations"][key].as_str()?.to_string()
                    }
                    _ => return None,
                }
            }
        });
    }
    if let Some(res) = e["valueFrom"]["resourceFieldRef"]["resource"].as_str() {
        // No limits locally: the node's allocatable, as Kubernetes reports it.
        return Some(match res {
            "limits.cpu" | "requests.cpu" => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .to_string(),
            _ => "0".to_string(),
        });
    }
    None
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    pod["spec"][list]
        .as_array()?
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
}

/// argv of an injected container: its `command` binary from our staged set, then args.
fn argv(state: &State, c: &Value) -> anyhow::Result<Vec<String>> {
    let cmd = c["command"][0].as_str().unwrap_or("mesh-proxy");
    let bin_name = cmd.rsplit('/').next().unwrap_or(cmd);
    let bin = state.bins.get(bin_name).with_context(|| {
        format!(
            "container {} runs {cmd:?}, which meshctl local does not have",
            c["name"]
        )
    })?;
    let mut out = vec![bin.display().to_string()];
    out.extend(
        c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string)),
    );
    Ok(out)
}

fn log_path(run: &RunDir, ps: &PodState, container: &str) -> PathBuf {
    run.logs()
        .join(format!("{}_{}", ps.namespace, ps.name))
        .join(format!("{container}.log"))
}

/// Polls `url` from inside the pod (bounded) until it answers `want`.
fn wait_http(
    netns: &str,
    url: &str,
    want: &str,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let argv: Vec<String> = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "1",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    loop {
        let code = proc::run_in(netns, 0, &argv, what).unwrap_or_default();
        if code == want || (want == "any" && code != "000" && !code.is_empty()) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "{what}: {url} answered {code:?} (want {want}) for {}s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates pod `spec` (appended to `state.pods`), saving after every step.
pub fn create(
    state: &mut State,
    run: &RunDir,
    spec: &PodSpec,
    mesh: &MeshConfig,
    save: &mut dyn FnMut(&State) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let (pod, injected) = admit(state, spec, mesh)?;
    let sidecar = injected.is_ok();
    let sysctls = super::sysctl::of_pod(&pod)
        .with_context(|| format!("pod {}/{}", spec.namespace, spec.name))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let ports: BTreeMap<String, u16> = container_ports(&pod)
        .into_iter()
        .filter_map(|(_, port, name)| Some((name?, port)))
        .collect();
    let ps = PodState {
        name: spec.name.clone(),
        namespace: spec.namespace.clone(),
        netns: format!("ml-{}-{}-{}", state.name, spec.namespace, spec.name),
        container_id: format!("{:032x}{:032x}", nanos, state.pods.len()),
        ip: None,
        cni_result: None,
        cni_added: 0,
        loopback_added: false,
        sidecar,
        ready: false,
        app_uid: APP_UID,
        labels: labels(&pod),
        ports,
        procs: Vec::new(),
    };
    // The API server holds the pod before its sandbox exists (the CNI plugin reads it).
    publish(run, &pod, &ps)?;
    state.pods.push(ps);
    let idx = state.pods.len() - 1;
    save(state)?;
    let who = format!("pod {}/{}", spec.namespace, spec.name);
    node::add_pod(state, idx, save).with_context(|| format!("{who}: creating its network"))?;
    publish(run, &pod, &state.pods[idx])?;

    let netns = state.pods[idx].netns.clone();
    // The pod's own sysctls, over the node's defaults (they are per netns).
    for (k, v) in &sysctls {
        let argv = ["sysctl".to_string(), "-qw".into(), format!("{k}={v}")];
        proc::run_in(&netns, 0, &argv, &format!("{who}: sysctl {k}"))?;
    }
    if sidecar {
        if let Some(init) = container(
            &pod,
            "initContainers",
            mesh_api::annotations::containers::INIT,
        ) {
            let argv = argv(state, init)?;
            proc::run_in(&netns, 0, &argv, &format!("{who}: istio-init"))?;
        }
        if let Some(val) = container(
            &pod,
            "initContainers",
            mesh_api::annotations::containers::VALIDATION,
        ) {
            let argv = argv(state, val)?;
            let uid = run_as(&pod, val, 1337);
            proc::run_in(&netns, uid, &argv, &format!("{who}: istio-validation"))?;
        }
        // A native sidecar (Kubernetes >= 1.29) is an init container that keeps running.
        let c = container(&pod, "containers", PROXY_CONTAINER)
            .or_else(|| container(&pod, "initContainers", PROXY_CONTAINER))
            .with_context(|| format!("{who}: injected without an istio-proxy container"))?;
        let argv = argv(state, c)?;
        let mut env: Vec<(String, String)> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_string(),
                    env_value(&pod, &state.pods[idx], e)?,
                ))
            })
            .collect();
        // The downward-API labels file does not exist here; pass them directly.
        env.push((
            "ISTIO_META_POD_LABELS".into(),
            serde_json::to_string(&state.pods[idx].labels)?,
        ));
        let uid = run_as(&pod, c, 1337);
        // The projected istio-token plays this part in a cluster.
        let sa = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let token = super::ca::issue(run, &spec.namespace, &spec.name, sa, uid)
            .with_context(|| format!("{who}: issuing its CA credential"))?;
        env.push(("CA_TOKEN_FILE".into(), token.display().to_string()));
        // 15012 is TLS: the bundle the agent publishes (istio-ca-root-cert's role).
        env.push((
            "CA_ROOT_CA".into(),
            super::ca::root_file(run).display().to_string(),
        ));
        let log = log_path(run, &state.pods[idx], PROXY_CONTAINER);
        let p = proc::spawn(PROXY_CONTAINER, &netns, uid, &argv, &env, &log)?;
        state.pods[idx].procs.push(p.clone());
        save(state)?;
        proc::wait_for_log(&p, "mesh-proxy bound", Duration::from_secs(20))
            .with_context(|| format!("{who}: istio-proxy"))?;
        wait_http(
            &netns,
            "http://127.0.0.1:15021/healthz/ready",
            "200",
            &format!("{who}: istio-proxy readiness"),
            Duration::from_secs(20),
        )?;
    }

    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let label_arg = state.pods[idx]
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let echo = state
        .bins
        .get("meshctl")
        .context("meshctl binary")?
        .display()
        .to_string();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let cname = c["name"].as_str().unwrap_or_default();
        if cname == PROXY_CONTAINER {
            continue;
        }
        let uid = run_as(&pod, c, APP_UID);
        state.pods[idx].app_uid = uid;
        let ports: Vec<u16> = container_ports(&pod)
            .into_iter()
            .filter(|(n, _, _)| n == cname)
            .map(|(_, p, _)| p)
            .collect();
        if ports.is_empty() {
            // Nothing to serve: the container's part is played by `exec`.
            continue;
        }
        let mut argv: Vec<String> = vec![echo.clone(), "echo".into()];
        for p in ports {
            argv.extend(["--port".to_string(), p.to_string()]);
        }
        for (k, v) in [
            ("--pod", spec.name.as_str()),
            ("--namespace", spec.namespace.as_str()),
            ("--service-account", sa.as_str()),
            ("--labels", label_arg.as_str()),
        ] {
            argv.extend([k.to_string(), v.to_string()]);
        }
        argv.push("--log-requests".into());
        let log = log_path(run, &state.pods[idx], cname);
        let p = proc::spawn(cname, &netns, uid, &argv, &[], &log)?;
        state.pods[idx].procs.push(p.clone());
        save(state)?;
        proc::wait_for_log(&p, "mesh-echo listening", Duration::from_secs(20))
            .with_context(|| format!("{who}: container {cname}"))?;
    }
    state.pods[idx].ready = true;
    publish(run, &pod, &state.pods[idx])?;
    save(state)?;
    Ok(match injected {
        Ok(()) => "sidecar injected".to_string(),
        Err(why) => format!("no sidecar ({why})"),
    })
}

/// Stops a pod's processes and removes its network and Pod object.
pub fn remove(state: &State, run: &RunDir, ps: &PodState) -> Vec<String> {
    for p in ps.procs.iter().rev() {
        proc::stop(p, Duration::from_secs(3));
    }
    let errors = node::del_pod(state, ps);
    super::ca::revoke(run, &ps.namespace, &ps.name);
    let _ = std::fs::remove_file(pod_file(run, &ps.namespace, &ps.name));
    errors
}
