//! Long-running processes of a local mesh: started detached inside a network
//! namespace as a given UID with their output in a log file, recognised later by
//! PID *and* start time (so a recycled PID is never signalled), and stopped with
//! SIGTERM, then SIGKILL after a grace period.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::state::Proc;

pub use mesh_runtime::process::pod_command as netns_command;

/// Starts `argv` in `netns` as `uid`, detached from this process (own process
/// group, output appended to `log`), and returns its record.
pub fn spawn(
    container: &str,
    netns: &str,
    uid: u32,
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Proc> {
    let mut cmd = netns_command(netns, uid, argv);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    spawn_command(container, cmd, log)
        .with_context(|| format!("starting {container} ({}) in {netns}", argv.join(" ")))
}

/// [`spawn`] of a command already built (the forwarder runs in the host's
/// namespace, not through `ip netns exec`).
pub fn spawn_command(container: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = cmd.spawn()?;
    let pid = child.id();
    // The child outlives this command; dropping the handle does not kill it.
    drop(child);
    Ok(Proc {
        container: container.to_string(),
        pid,
        start_time: start_time(pid).unwrap_or(0),
        log: log.to_path_buf(),
    })
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

/// Whether the recorded process is still the one running under its PID.
pub fn alive(p: &Proc) -> bool {
    start_time(p.pid) == Some(p.start_time) && !is_zombie(p.pid)
}

/// SIGTERM, wait up to `grace`, then SIGKILL. A process already gone is fine.
pub fn stop(p: &Proc, grace: Duration) {
    if !alive(p) {
        return;
    }
    let pid = Pid::from_raw(p.pid as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(p) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(p) {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// Waits (bounded) until `log` contains `needle`; fails early, with the log's
/// tail, if the process exits first.
pub fn wait_for_log(p: &Proc, needle: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if !alive(p) {
            bail!(
                "{} exited before it was ready; its log ({}) ends with:\n{}",
                p.container,
                p.log.display(),
                tail(&text, 15)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} not ready after {}s (waiting for {needle:?} in {}); its log ends with:\n{}",
                p.container,
                timeout.as_secs(),
                p.log.display(),
                tail(&text, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a command to completion in `netns` as `uid`; a non-zero exit is an error
/// naming the command and carrying its output.
pub fn run_in(netns: &str, uid: u32, argv: &[String], what: &str) -> anyhow::Result<String> {
    let out = netns_command(netns, uid, argv)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: starting {}", argv.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{what}: `{}` failed ({}): {}{}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a host command (as root); a non-zero exit is an error with its stderr.
pub fn run(argv: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", argv.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
