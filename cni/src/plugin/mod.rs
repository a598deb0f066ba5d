//! The chained CNI plugin (CNI spec 0.3.0–1.1.0): `ADD` writes an injected pod's capture
//! rules inside its netns and passes `prevResult` through unchanged; `DEL` removes what
//! `ADD` wrote; `CHECK` verifies it; `STATUS` reports readiness; `GC` removes leftovers;
//! `VERSION` lists the versions. It fails closed: when the pod cannot be read or the
//! rules cannot be written, `ADD` fails and nothing is left half-written.
//! Results and errors go to stdout; logs only to stderr or a file.

pub mod config;
pub mod pod;
pub mod state;

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use mesh_api::RedirectParams;

use crate::capture;
use crate::iptables::{self, Backend};
use crate::netns::{self, NetnsError};
use config::{code, CniError, NetConf};
use pod::Decision;

/// The runtime's view of one call (the `CNI_*` environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

impl Env {
    pub fn from_process() -> Env {
        let v = |k: &str| std::env::var(k).unwrap_or_default();
        Env {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args: v("CNI_ARGS"),
        }
    }

    fn require(&self, names: &[(&str, &str)]) -> Result<(), CniError> {
        let missing: Vec<&str> = names
            .iter()
            .filter(|(_, v)| v.is_empty())
            .map(|(n, _)| *n)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                code::INVALID_ENV,
                "missing environment variables",
                missing.join(", "),
            ))
        }
    }

    /// `K8S_POD_NAMESPACE` / `K8S_POD_NAME` from `CNI_ARGS`.
    pub fn pod(&self) -> Option<(String, String)> {
        let get = |key: &str| {
            self.args.split(';').find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().to_string())
            })
        };
        Some((get("K8S_POD_NAMESPACE")?, get("K8S_POD_NAME")?))
    }
}

/// Runs one CNI call; `Ok(text)` is printed on stdout.
pub fn handle(env: &Env, stdin: &[u8]) -> Result<String, CniError> {
    if env.command == "VERSION" {
        let v = serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
            .filter(|v| config::SUPPORTED_VERSIONS.contains(&v.as_str()))
            .unwrap_or_else(|| "1.1.0".to_string());
        return Ok(serde_json::json!({
            "cniVersion": v,
            "supportedVersions": config::SUPPORTED_VERSIONS,
        })
        .to_string());
    }
    let (conf, _version) = config::parse(stdin)?;
    init_logging(&conf);
    let pod = env
        .pod()
        .map(|(ns, n)| format!("{ns}/{n}"))
        .unwrap_or_default();
    let span = tracing::info_span!("cni", command = %env.command, container_id = %env.container_id, pod = %pod);
    let _g = span.enter();
    match env.command.as_str() {
        "ADD" => add(env, &conf),
        "DEL" => del(env, &conf).map(|_| String::new()),
        "CHECK" => check(env, &conf).map(|_| String::new()),
        "STATUS" => status(&conf).map(|_| String::new()),
        "GC" => gc(&conf).map(|_| String::new()),
        other => Err(CniError::new(
            code::INVALID_ENV,
            "unknown CNI_COMMAND",
            format!("CNI_COMMAND={other:?}"),
        )),
    }
}

fn init_logging(conf: &NetConf) {
    let level = conf.log_level.clone().unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::new(level);
    let file = conf.log_file.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let _ = match file {
        Some(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> CniError + '_ {
    move |e| CniError::new(code::IO_FAILURE, what.to_string(), e)
}

/// The backend, decided once per node and remembered in the state folder.
fn backend(conf: &NetConf) -> Backend {
    use crate::flags::BackendChoice;
    match conf.iptables_backend {
        BackendChoice::Nft => Backend::Nft,
        BackendChoice::Legacy => Backend::Legacy,
        BackendChoice::Auto => {
            let cache = conf.state_dir.join("backend");
            match std::fs::read_to_string(&cache)
                .ok()
                .as_deref()
                .map(str::trim)
            {
                Some("nft") => Backend::Nft,
                Some("legacy") => Backend::Legacy,
                _ => {
                    let b = iptables::detect(BackendChoice::Auto);
                    let _ = std::fs::create_dir_all(&conf.state_dir)
                        .and_then(|_| std::fs::write(&cache, b.name()));
                    b
                }
            }
        }
    }
}

fn prev_ips(prev: &serde_json::value::RawValue) -> Vec<IpAddr> {
    let v: serde_json::Value = serde_json::from_str(prev.get()).unwrap_or_default();
    v.get("ips")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn read_pod(conf: &NetConf, ns: &str, name: &str) -> Result<pod::Pod, CniError> {
    let r = if let Some(dir) = &conf.pod_dir {
        pod::from_dir(dir, ns, name)
    } else if let Some(k) = &conf.kubernetes {
        pod::from_api(k, ns, name)
    } else {
        Err(pod::PodError::NoSource)
    };
    r.map_err(|e| match e {
        pod::PodError::NoSource => CniError::new(code::INVALID_CONFIG, "no pod source", e),
        _ => CniError::new(
            code::TRY_AGAIN_LATER,
            format!("cannot read pod {ns}/{name}"),
            e,
        ),
    })
}

fn add(env: &Env, conf: &NetConf) -> Result<String, CniError> {
    env.require(&[
        ("CNI_CONTAINERID", &env.container_id),
        ("CNI_NETNS", &env.netns),
        ("CNI_IFNAME", &env.ifname),
    ])?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "missing prevResult",
            "mesh-cni is a chained plugin: it must come after the interface plugin",
        )
    })?;
    let passthrough = prev.get().to_string();
    let Some((ns, name)) = env.pod() else {
        tracing::info!("not a Kubernetes pod (no K8S_POD_NAMESPACE/K8S_POD_NAME): skipped");
        return Ok(passthrough);
    };
    if conf.exclude_namespaces.contains(&ns) {
        tracing::info!(namespace = %ns, "namespace excluded: skipped");
        return Ok(passthrough);
    }
    let pod = read_pod(conf, &ns, &name)?;
    if let Decision::Skip(why) = pod::decide(&pod, &conf.exclude_namespaces) {
        tracing::info!(reason = %why, "pod skipped");
        return Ok(passthrough);
    }
    let mut params = RedirectParams::for_pod(&pod.metadata.annotations, &conf.redirect_defaults)
        .map_err(|e| {
            CniError::new(
                code::BAD_POD,
                format!("invalid annotations on pod {ns}/{name}"),
                e,
            )
        })?;
    params.enable_ipv6 = crate::rules::wants_ipv6(&prev_ips(prev));
    let backend = backend(conf);
    let p = params.clone();
    let written = netns::run_in(Path::new(&env.netns), move || capture::write(backend, &p))
        .map_err(|e| {
            CniError::new(
                code::CAPTURE_FAILED,
                "cannot enter pod network namespace",
                e,
            )
        })?
        .map_err(|e| CniError::new(code::CAPTURE_FAILED, "cannot write capture rules", e))?;
    let mut written = written;
    // A repeated ADD found the tables the first one created: keep owning them.
    if let Ok(Some(prev)) = state::read(&conf.state_dir, &env.container_id, &env.ifname) {
        merge_created(&mut written.v4, &prev.written.v4);
        if let (Some(now), Some(before)) = (written.v6.as_mut(), prev.written.v6.as_ref()) {
            merge_created(now, before);
        }
    }
    let record = state::Record {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: env.netns.clone(),
        pod: format!("{ns}/{name}"),
        params,
        written,
    };
    if let Err(e) = state::write(&conf.state_dir, &record) {
        // Without the record DEL could not undo the rules: fail closed and undo now.
        let w = record.written.clone();
        let _ = netns::run_in(Path::new(&env.netns), move || capture::remove(&w));
        return Err(io_err("cannot record the capture")(e));
    }
    tracing::info!(
        backend = backend.name(),
        ipv6 = record.params.enable_ipv6,
        "capture rules written"
    );
    Ok(passthrough)
}

fn merge_created(now: &mut iptables::Applied, before: &iptables::Applied) {
    for t in &before.created_tables {
        if !now.created_tables.contains(t) {
            now.created_tables.push(t.clone());
        }
    }
}

/// Removes a recorded capture; a vanished netns means nothing is left to remove.
fn undo(rec: &state::Record) -> Result<(), CniError> {
    let w = rec.written.clone();
    match netns::run_in(Path::new(&rec.netns), move || capture::remove(&w)) {
        Ok(r) => {
            r.map_err(|e| CniError::new(code::CAPTURE_FAILED, "cannot remove capture rules", e))
        }
        Err(NetnsError::Missing { .. }) => Ok(()),
        Err(e) => Err(CniError::new(
            code::CAPTURE_FAILED,
            "cannot enter pod network namespace",
            e,
        )),
    }
}

fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    env.require(&[("CNI_CONTAINERID", &env.container_id)])?;
    let Some(mut rec) = state::read(&conf.state_dir, &env.container_id, &env.ifname)
        .map_err(io_err("cannot read capture record"))?
    else {
        tracing::info!("nothing recorded for this attachment");
        return Ok(());
    };
    if !env.netns.is_empty() {
        rec.netns = env.netns.clone();
    }
    if env.netns.is_empty() {
        tracing::info!("no netns given: it is gone, and the rules with it");
    } else {
        undo(&rec)?;
    }
    state::remove(&conf.state_dir, &env.container_id, &env.ifname)
        .map_err(io_err("cannot remove capture record"))?;
    tracing::info!("capture rules removed");
    Ok(())
}

fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    env.require(&[
        ("CNI_CONTAINERID", &env.container_id),
        ("CNI_NETNS", &env.netns),
    ])?;
    if conf.prev_result.is_none() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "missing prevResult",
            "CHECK needs prevResult",
        ));
    }
    let Some(rec) = state::read(&conf.state_dir, &env.container_id, &env.ifname)
        .map_err(io_err("cannot read capture record"))?
    else {
        return Ok(());
    };
    let (backend, params) = (rec.written.backend, rec.params.clone());
    let missing = netns::run_in(Path::new(&env.netns), move || {
        capture::check(backend, &params)
    })
    .map_err(|e| {
        CniError::new(
            code::CAPTURE_FAILED,
            "cannot enter pod network namespace",
            e,
        )
    })?
    .map_err(|e| CniError::new(code::CAPTURE_FAILED, "cannot read capture rules", e))?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::CAPTURE_FAILED,
            "capture rules missing",
            missing.join("; "),
        ))
    }
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    match &conf.ready_file {
        Some(f) if !f.exists() => Err(CniError::new(
            code::NOT_READY,
            "mesh-cni is not ready",
            format!("the installer has not finished ({} missing)", f.display()),
        )),
        _ => Ok(()),
    }
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    for rec in state::all(&conf.state_dir) {
        let keep = valid
            .iter()
            .any(|a| a.container_id == rec.container_id && a.ifname == rec.ifname);
        if keep {
            continue;
        }
        if let Err(e) = undo(&rec) {
            tracing::warn!(container_id = %rec.container_id, error = %e, "leftover rules not removed");
        }
        state::remove(&conf.state_dir, &rec.container_id, &rec.ifname)
            .map_err(io_err("cannot remove capture record"))?;
        tracing::info!(container_id = %rec.container_id, pod = %rec.pod, "leftover attachment collected");
    }
    Ok(())
}

/// Runs `f`, turning a panic into a CNI error (code 999) instead of a crash.
pub fn protect(f: impl FnOnce() -> Result<String, CniError>) -> Result<String, CniError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(CniError::new(
            code::INTERNAL,
            "internal error",
            netns::panic_message(&p),
        ))
    })
}

/// Entry point when `CNI_COMMAND` is set.
pub fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    let version_of = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "1.1.0".to_string())
    };
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        println!(
            "{}",
            CniError::new(code::IO_FAILURE, "cannot read stdin", e).to_json("1.1.0")
        );
        return ExitCode::FAILURE;
    }
    std::panic::set_hook(Box::new(|info| {
        eprintln!("mesh-cni: internal error: {info}")
    }));
    let result = std::panic::catch_unwind(|| handle(&env, &stdin)).unwrap_or_else(|p| {
        Err(CniError::new(
            code::INTERNAL,
            "internal error",
            netns::panic_message(&p),
        ))
    });
    match result {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh-cni: {e}");
            println!("{}", e.to_json(&version_of(&stdin)));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_cni_error() {
        let e = protect(|| panic!("boom at {}", 42)).unwrap_err();
        assert_eq!(e.code, 999);
        assert_eq!(e.details, "boom at 42");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(
            (v["code"].as_u64(), v["cniVersion"].as_str()),
            (Some(999), Some("1.0.0"))
        );
        assert_eq!(protect(|| Ok("x".into())).unwrap(), "x");
    }

    #[test]
    fn cni_args_parse() {
        let env = Env {
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u".into(),
            ..Env::default()
        };
        assert_eq!(env.pod(), Some(("shop".into(), "web-0".into())));
        assert_eq!(Env::default().pod(), None);
    }
}
