//! The local node: a network namespace holding the pod bridge, pods attached to it
//! through the real CNI chain (loopback, bridge + host-local, then `mesh-cni` in
//! CNI mode), name resolution as in a cluster (per-pod `/etc/netns/<ns>/hosts`),
//! and Service VIPs for pods without a sidecar (DNAT in the node, as kube-proxy
//! does). Every function here is safe to call again on a half-built node: that
//! is what `down` after a crash relies on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mesh_runtime::cni;
use serde_json::{json, Value};

use super::proc::run;
use super::state::{PodState, ServiceState, State};

pub use mesh_runtime::GATEWAY;
pub use mesh_runtime::POD_SUBNET;
/// Service VIPs are handed out from here (Kubernetes' default service CIDR).
pub const VIP_BASE: [u8; 3] = [10, 96, 0];
pub const DOMAIN: &str = "cluster.local";
const CNI_VERSION: &str = "1.0.0";
const SVC_CHAIN: &str = "MESHLOCAL-SERVICES";

/// The conflist's plugins after loopback.
pub fn chain(state_dir: &Path, mesh_cni: Option<Value>) -> Vec<Value> {
    let mut plugins = vec![mesh_runtime::bridge_plugin(state_dir)];
    plugins.extend(mesh_cni);
    plugins
}

fn exists(netns: &str) -> bool {
    Path::new("/var/run/netns").join(netns).exists()
}

/// The bridge's MAC address (set, so it stays when ports join).
const BRIDGE_MAC: &str = "02:6d:65:73:68:01";

/// Creates the node namespace with the bridge and its gateway address up, so
/// the agent can bind the gateway address before the first pod exists.
pub fn create(state: &State) -> anyhow::Result<()> {
    let ns = &state.node_netns;
    if !exists(ns) {
        run(&["ip", "netns", "add", ns])?;
    }
    run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    if run(&["ip", "-n", ns, "link", "show", "cni0"]).is_err() {
        // An address of its own (locally administered): a bridge created
        // without one takes the lowest MAC of its ports and changes it as pods
        // join, and a pod whose ARP entry still names the old one loses its
        // packets to the node (the agent, the gateway) for the seconds the
        // entry takes to be probed again.
        run(&[
            "ip", "-n", ns, "link", "add", "cni0", "address", BRIDGE_MAC, "type", "bridge",
        ])?;
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{GATEWAY}/16"),
            "dev",
            "cni0",
        ])?;
    }
    run(&["ip", "-n", ns, "link", "set", "cni0", "up"])?;
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ])?;
    // Service VIPs for pods without a sidecar: DNAT here, masquerade so replies
    // come back through the node (pods share the bridge, like a hairpin).
    let rules = format!(
        "*nat\n:{SVC_CHAIN} - [0:0]\n-A PREROUTING -j {SVC_CHAIN}\n-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE\nCOMMIT\n"
    );
    iptables_restore(ns, &rules, false)
}

fn iptables_restore(netns: &str, rules: &str, noflush: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", netns, "iptables-restore", "-w", "5"]);
    if noflush {
        cmd.arg("--noflush");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting iptables-restore (is the iptables package installed?)")?;
    child
        .stdin
        .take()
        .context("iptables-restore stdin")?
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "iptables-restore in {netns} failed: {}\nrules:\n{rules}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn invocation(
    state: &State,
    pod: &PodState,
    plugin_type: &str,
    command: &str,
) -> anyhow::Result<cni::Invocation> {
    let plugin = cni::find_plugin(plugin_type, &state.cni_path).with_context(|| {
        format!(
            "CNI plugin {plugin_type:?} not found in {:?} (apt-get install containernetworking-plugins)",
            state.cni_path
        )
    })?;
    Ok(cni::Invocation {
        plugin,
        command: command.into(),
        container_id: pod.container_id.clone(),
        netns: Path::new("/var/run/netns").join(&pod.netns),
        ifname: "eth0".into(),
        args: format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            pod.namespace, pod.name, pod.container_id
        ),
        path: state.cni_path.clone(),
        run_in_netns: Some(state.node_netns.clone()),
    })
}

fn list_name(state: &State) -> String {
    format!("meshlocal-{}", state.name)
}

/// Creates the pod's namespace and runs CNI ADD through the chain; `save` is
/// called after every step so a crash leaves a state `down` can undo.
pub fn add_pod(
    state: &mut State,
    idx: usize,
    save: &mut dyn FnMut(&State) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let netns = state.pods[idx].netns.clone();
    if !exists(&netns) {
        run(&["ip", "netns", "add", &netns])?;
    }
    run(&[
        "ip",
        "netns",
        "exec",
        &netns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_unprivileged_port_start=0",
    ])?;
    let lo = cni::Invocation {
        ifname: "lo".into(),
        ..invocation(state, &state.pods[idx], "loopback", "ADD")?
    };
    cni::invoke(
        &lo,
        &json!({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"}),
    )?;
    state.pods[idx].loopback_added = true;
    save(state)?;
    let mut prev: Option<Value> = None;
    for plugin in state.chain.clone() {
        let ty = plugin["type"].as_str().unwrap_or_default().to_string();
        let inv = invocation(state, &state.pods[idx], &ty, "ADD")?;
        let conf = cni::plugin_config(&list_name(state), CNI_VERSION, &plugin, prev.as_ref());
        // A failed ADD is followed by DEL over the whole chain, as runtimes do.
        state.pods[idx].cni_added = state.chain.len();
        state.pods[idx].cni_result = prev.clone();
        save(state)?;
        let result = cni::invoke(&inv, &conf)?;
        prev = Some(result);
    }
    let result = prev.unwrap_or(Value::Null);
    let ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .with_context(|| format!("CNI result has no IP address: {result}"))?;
    let pod = &mut state.pods[idx];
    pod.ip = Some(ip);
    pod.cni_result = Some(result);
    save(state)
}

/// CNI DEL (reverse chain order) and namespace removal. Every step is tried;
/// errors are returned together.
pub fn del_pod(state: &State, pod: &PodState) -> Vec<String> {
    let mut errors = Vec::new();
    if exists(&pod.netns) {
        for plugin in state.chain.iter().take(pod.cni_added).rev() {
            let ty = plugin["type"].as_str().unwrap_or_default();
            let step = invocation(state, pod, ty, "DEL").and_then(|inv| {
                let conf = cni::plugin_config(
                    &list_name(state),
                    CNI_VERSION,
                    plugin,
                    pod.cni_result.as_ref(),
                );
                cni::invoke(&inv, &conf)
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            });
            if let Err(e) = step {
                errors.push(format!("{}/{}: CNI DEL {ty}: {e}", pod.namespace, pod.name));
            }
        }
        if let Err(e) = run(&["ip", "netns", "del", &pod.netns]) {
            errors.push(format!("{}/{}: {e}", pod.namespace, pod.name));
        }
    }
    let _ = std::fs::remove_dir_all(etc_dir(&pod.netns));
    errors
}

pub fn del_node(state: &State) -> Vec<String> {
    let mut errors = Vec::new();
    if exists(&state.node_netns) {
        if let Err(e) = run(&["ip", "netns", "del", &state.node_netns]) {
            errors.push(e.to_string());
        }
    }
    errors
}

fn etc_dir(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}

/// Hosts a pod resolves: its own name, then every Service as a cluster DNS
/// would answer it from the pod's namespace, then ServiceEntry hosts that have
/// an address (what Istio's DNS proxy answers).
pub fn hosts_file(state: &State, pod: &PodState, entries: &[(String, String)]) -> String {
    let mut s = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
    if let Some(ip) = &pod.ip {
        let _ = writeln!(s, "{ip} {}", pod.name);
    }
    for svc in &state.services {
        let Some(vip) = &svc.vip else { continue };
        let (n, ns) = (&svc.name, &svc.namespace);
        let short = if *ns == pod.namespace {
            format!(" {n}")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{vip} {n}.{ns}.svc.{DOMAIN} {n}.{ns}.svc {n}.{ns}{short}"
        );
    }
    for (addr, host) in entries {
        let _ = writeln!(s, "{addr} {host}");
    }
    s
}

/// Rewrites every pod's hosts file and resolv.conf.
pub fn write_resolution(state: &State, entries: &[(String, String)]) -> anyhow::Result<()> {
    for pod in &state.pods {
        let dir = etc_dir(&pod.netns);
        super::state::write_file(&dir.join("hosts"), &hosts_file(state, pod, entries))?;
        // No DNS server runs locally: names not in hosts fail at once.
        let resolv = format!(
            "search {}.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\nnameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n",
            pod.namespace
        );
        super::state::write_file(&dir.join("resolv.conf"), &resolv)?;
    }
    Ok(())
}

/// The endpoints of a service: ready pods whose labels match its selector, with
/// named target ports looked up in their containers.
pub fn endpoints(state: &State, svc: &ServiceState, target: &str) -> Vec<(String, u16)> {
    if svc.selector.is_empty() {
        return Vec::new();
    }
    state
        .pods
        .iter()
        .filter(|p| p.namespace == svc.namespace && p.ip.is_some())
        .filter(|p| svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .filter_map(|p| {
            let port = target
                .parse::<u16>()
                .ok()
                .or_else(|| p.ports.get(target).copied())?;
            Some((p.ip.clone()?, port))
        })
        .collect()
}

/// kube-proxy's job for clients without a sidecar: each VIP:port DNATs to one of
/// its endpoints at random (`statistic` with probability 1/remaining).
pub fn service_rules(state: &State) -> String {
    let mut s = format!("*nat\n:{SVC_CHAIN} - [0:0]\n");
    for svc in &state.services {
        let Some(vip) = &svc.vip else { continue };
        for (port, target) in &svc.ports {
            let eps = endpoints(state, svc, target);
            let n = eps.len();
            for (i, (ip, tp)) in eps.iter().enumerate() {
                let stat = if i + 1 < n {
                    format!(
                        " -m statistic --mode random --probability {:.5}",
                        1.0 / (n - i) as f64
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "-A {SVC_CHAIN} -d {vip}/32 -p tcp --dport {port}{stat} -j DNAT --to-destination {ip}:{tp}"
                );
            }
        }
    }
    s.push_str("COMMIT\n");
    s
}

pub fn write_service_rules(state: &State) -> anyhow::Result<()> {
    iptables_restore(&state.node_netns, &service_rules(state), true)
}

/// The next free VIP.
pub fn allocate_vip(state: &State) -> anyhow::Result<String> {
    let used: Vec<&str> = state
        .services
        .iter()
        .filter_map(|s| s.vip.as_deref())
        .collect();
    (10..=250u8)
        .map(|i| format!("{}.{}.{}.{i}", VIP_BASE[0], VIP_BASE[1], VIP_BASE[2]))
        .find(|ip| !used.contains(&ip.as_str()))
        .context("no free service VIP left in 10.96.0.10-250")
}

/// Selector map of a Service object.
pub fn selector(svc: &Value) -> BTreeMap<String, String> {
    svc["spec"]["selector"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Refuses early, with the reason, rather than failing halfway through
/// creating namespaces or rules.
pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "meshctl local creates network namespaces and iptables rules: run it as root"
        );
    }
    Ok(())
}
