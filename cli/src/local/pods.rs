//! Looking into the pods of a running local mesh: the `pods` table, finding a
//! pod by name as kubectl does (`name` or `namespace/name`), and `exec`,
//! `logs` and `proxy-config` in one of them.

use anyhow::{bail, Context};

use super::proc;
use super::state::{self, State};

/// `meshctl local pods`: one line per pod, with how many of its processes live.
pub(super) fn pods(st: &State) -> anyhow::Result<()> {
    println!(
        "{:<12} {:<24} {:<6} {:<10} {:<15} SIDECAR",
        "NAMESPACE", "NAME", "READY", "STATUS", "IP"
    );
    for p in &st.pods {
        let alive = p.procs.iter().filter(|x| proc::alive(x)).count();
        let status = if !p.ready {
            "Pending"
        } else if alive == p.procs.len() {
            "Running"
        } else {
            "Error"
        };
        println!(
            "{:<12} {:<24} {:<6} {:<10} {:<15} {}",
            p.namespace,
            p.name,
            format!("{alive}/{}", p.procs.len()),
            status,
            p.ip.as_deref().unwrap_or("-"),
            if p.sidecar { "istio-proxy" } else { "-" }
        );
    }
    Ok(())
}

/// The pod `name` (or `namespace/name`), refusing a name found in several
/// namespaces rather than guessing.
pub(super) fn find_pod<'a>(
    st: &'a State,
    name: &str,
    ns: Option<&str>,
) -> anyhow::Result<&'a state::PodState> {
    let (ns, name) = match name.split_once('/') {
        Some((n, p)) => (Some(n), p),
        None => (ns, name),
    };
    let found: Vec<_> = st
        .pods
        .iter()
        .filter(|p| p.name == name && ns.is_none_or(|n| p.namespace == n))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "no pod {name:?}{} (see `meshctl local pods`)",
            ns.map(|n| format!(" in namespace {n}")).unwrap_or_default()
        ),
        _ => bail!("pod name {name:?} exists in several namespaces: give -n NAMESPACE"),
    }
}

/// Runs `command` in the pod's network namespace as `uid` (default: its app's
/// UID, so the traffic is captured as the app's would be) and exits with its code.
pub(super) fn exec(
    st: &State,
    pod: &str,
    namespace: Option<&str>,
    uid: Option<u32>,
    command: &[String],
) -> anyhow::Result<()> {
    let p = find_pod(st, pod, namespace)?;
    let uid = uid.unwrap_or(p.app_uid);
    let status = proc::netns_command(&p.netns, uid, command)
        .status()
        .with_context(|| format!("running {command:?} in {}", p.name))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Prints a container's log: `container`, or the first app container.
pub(super) fn logs(
    st: &State,
    pod: &str,
    namespace: Option<&str>,
    container: Option<&str>,
) -> anyhow::Result<()> {
    let p = find_pod(st, pod, namespace)?;
    let proc = match container {
        Some(c) => p.procs.iter().find(|x| x.container == c),
        None => p.procs.iter().find(|x| x.container != "istio-proxy"),
    };
    let Some(proc) = proc else {
        let have: Vec<&str> = p.procs.iter().map(|x| x.container.as_str()).collect();
        bail!(
            "pod {}/{} has no container {:?} (it has {have:?})",
            p.namespace,
            p.name,
            container.unwrap_or_default()
        );
    };
    let text = std::fs::read_to_string(&proc.log)
        .with_context(|| format!("reading {}", proc.log.display()))?;
    print!("{text}");
    Ok(())
}

/// `meshctl proxy-config KIND` run inside the pod, and exits with its code.
pub(super) fn proxy_config(
    st: &State,
    pod: &str,
    kind: String,
    args: Vec<String>,
) -> anyhow::Result<()> {
    let p = find_pod(st, pod, None)?;
    if !p.sidecar {
        bail!("pod {}/{} has no sidecar", p.namespace, p.name);
    }
    // The admin port is loopback-only inside the pod.
    let mut argv = vec![
        st.bins["meshctl"].display().to_string(),
        "proxy-config".to_string(),
        kind,
        "127.0.0.1:15000".to_string(),
    ];
    argv.extend(args);
    let status = proc::netns_command(&p.netns, 0, &argv)
        .status()
        .context("running meshctl proxy-config in the pod")?;
    std::process::exit(status.code().unwrap_or(1));
}
