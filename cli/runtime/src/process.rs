//! Running programs in the host or inside a pod's network namespace as a given UID,
//! with errors that name the command, the namespace and its stderr.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};

/// Runs a command (in `netns` when given, as root) and returns its stdout; a
/// non-zero exit is an error carrying its stderr.
pub(crate) fn run(argv: &[&str], netns: Option<&str>) -> Result<String> {
    let full: Vec<&str> = match netns {
        Some(ns) => ["ip", "netns", "exec", ns]
            .into_iter()
            .chain(argv.iter().copied())
            .collect(),
        None => argv.to_vec(),
    };
    let out = Command::new(full[0])
        .args(&full[1..])
        .output()
        .map_err(|e| HarnessError::Command {
            command: full.join(" "),
            netns: netns.map(str::to_string),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: full.join(" "),
            netns: netns.map(str::to_string),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip netns exec NS [setpriv --reuid U --regid U --clear-groups --] argv...`
pub fn pod_command(netns: &str, uid: u32, argv: &[String]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns]);
    if uid != 0 {
        c.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
        ]);
    }
    c.args(argv);
    c
}

pub(crate) fn output(netns: &str, uid: u32, argv: &[String]) -> Result<Output> {
    pod_command(netns, uid, argv)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::Command {
            command: argv.join(" "),
            netns: Some(netns.to_string()),
            status: "not started".into(),
            stderr: e.to_string(),
        })
}

/// A process running inside a pod. Its stdout lines can be awaited (to learn that
/// a server is ready without sleeping); it is killed and reaped on drop.
pub struct PodProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    description: String,
}

impl PodProcess {
    pub(crate) fn spawn(netns: &str, uid: u32, argv: &[String]) -> Result<PodProcess> {
        let mut child = pod_command(netns, uid, argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| HarnessError::Command {
                command: argv.join(" "),
                netns: Some(netns.to_string()),
                status: "not started".into(),
                stderr: e.to_string(),
            })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(PodProcess {
            child,
            lines,
            seen: Vec::new(),
            description: format!("{} in {netns}", argv.join(" ")),
        })
    }

    /// Waits (bounded) for a stdout line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Ok(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    return Err(HarnessError::Exited {
                        what: self.description.clone(),
                        status: format!("{status:?}"),
                        output: self.seen.clone(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let status = self.child.try_wait().ok().flatten();
                    return Err(HarnessError::Timeout {
                        what: format!(
                            "{needle:?} from {} (exited: {status:?}, output so far: {:?})",
                            self.description, self.seen
                        ),
                        secs: timeout.as_secs(),
                    });
                }
            }
        }
    }

    /// Lines printed so far (drains what has arrived).
    pub fn output_lines(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the process (for drain tests).
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        kill_tree(self.child.id(), sig);
        Ok(())
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().map_err(|e| HarnessError::Io {
                context: self.description.clone(),
                source: e,
            })? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout {
                    what: format!("exit of {}", self.description),
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Signals `pid`'s descendants (setpriv execs in place, `ip netns exec` too, so
/// the chain is usually one process) and then `pid` itself.
fn kill_tree(pid: u32, sig: nix::sys::signal::Signal) {
    use nix::unistd::Pid;
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            kill_tree(c, sig);
        }
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig);
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill_tree(self.child.id(), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
