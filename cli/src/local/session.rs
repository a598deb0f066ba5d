//! A local mesh driven from code rather than the command line (`meshctl demo`):
//! the same steps as the subcommands, plus the checks the demo makes from this
//! host — which version of a service answered, and when a proxy has taken new
//! config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use super::apply::apply;
use super::down::down;
use super::manifest;
use super::node::require_root;
use super::pods::find_pod;
use super::proc;
use super::publish;
use super::state::{Mode, RunDir};
use super::up::{up, FileArgs, UpArgs};

/// A local mesh driven from code (the demo): the same steps as the subcommands.
pub struct Session {
    run: RunDir,
    name: String,
}

impl Session {
    pub fn new(root: &Path, name: &str) -> Session {
        Session {
            run: RunDir::new(root, name),
            name: name.to_string(),
        }
    }

    /// `up` in CNI mode with the given gateways (`--gateways`), replacing a
    /// leftover mesh of the same name.
    pub fn up(&self, files: &[PathBuf], gateways: &str) -> anyhow::Result<()> {
        require_root()?;
        if self.run.exists() {
            down(&self.run)?;
        }
        let args = UpArgs {
            files: FileArgs {
                files: files.to_vec(),
                namespace: "default".into(),
            },
            mode: Mode::Cni,
            mesh_config: None,
            keep_on_error: false,
            gateways: gateways.to_string(),
            no_trace_collector: false,
            visibility: mesh_agent::compile::Visibility::default(),
        };
        up(&self.run, &self.name, &args)
    }

    /// Applies a file and waits (bounded) until `pod`'s proxy runs the new config.
    pub fn apply_and_wait(&self, file: &Path, pod: &str) -> anyhow::Result<()> {
        let mut st = self.run.load()?;
        let p = find_pod(&st, pod, None)?.clone();
        let before = proxy_version(&p.netns);
        let m = manifest::read(&[file.to_path_buf()], "default")?;
        apply(&self.run, &mut st, &m)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while proxy_version(&p.netns) <= before {
            if std::time::Instant::now() > deadline {
                bail!(
                    "{pod}'s proxy did not receive {} within 15s",
                    file.display()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// Where a published Service port is reached from this host (`127.0.0.1:PORT`).
    pub fn service_url(&self, name: &str, namespace: &str, port: u16) -> anyhow::Result<String> {
        let st = self.run.load()?;
        let s = publish::service_url(&st.services, name, namespace, Some(port))?;
        Ok(s.trim().to_string())
    }

    /// `n` calls of `url` from this host (curl, one connection): how many each
    /// version answered, or the status when the answer is not the echo app's.
    pub fn host_versions(
        &self,
        url: &str,
        n: usize,
        extra: &[&str],
    ) -> anyhow::Result<Vec<(String, usize)>> {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "30"])
            .args(extra)
            .arg(format!("{url}?call=[1-{n}]"));
        let out = cmd.output().context("running curl")?;
        if !out.status.success() {
            bail!(
                "curl {url} from this host failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        count_versions(&String::from_utf8_lossy(&out.stdout))
    }

    /// One GET of `url` from this host: the status and the answering pod.
    pub fn host_get(&self, url: &str) -> anyhow::Result<(u16, Option<String>)> {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", url])
            .output()
            .context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        let pod = serde_json::from_str::<mesh_runtime::echo::EchoReply>(body)
            .ok()
            .map(|r| r.pod);
        Ok((code.trim().parse().unwrap_or(0), pod))
    }

    pub fn down(&self) -> anyhow::Result<()> {
        down(&self.run)
    }
}

/// Echo answers (concatenated JSON) counted by the answering pod's version.
fn count_versions(out: &str) -> anyhow::Result<Vec<(String, usize)>> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for reply in
        serde_json::Deserializer::from_str(out).into_iter::<mesh_runtime::echo::EchoReply>()
    {
        let r = reply.context("an answer was not the echo app's JSON")?;
        *counts
            .entry(r.version.unwrap_or_else(|| "-".into()))
            .or_default() += 1;
    }
    Ok(counts.into_iter().collect())
}

/// The config version a pod's proxy runs (0 when it cannot be read).
fn proxy_version(netns: &str) -> u64 {
    let argv: Vec<String> = [
        "curl",
        "-s",
        "--max-time",
        "2",
        "http://127.0.0.1:15000/config_dump",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    proc::run_in(netns, 0, &argv, "config_dump")
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_u64())
        .unwrap_or(0)
}
