//! The child processes the benchmark runs and what it reads of them: the
//! release `mesh-agent` and `mesh-proxy` binaries (next to this example's
//! directory), their stdout lines, `/proc` CPU seconds and RSS, the kernel's
//! dropped-handshake counter, the open-file limit, and plain HTTP GETs to an
//! admin or `/metrics` port. A leaf: it imports no sibling.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Time to let a process settle before sampling its CPU and RSS.
pub const SETTLE: Duration = Duration::from_secs(2);

/// A child process, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    child: Child,
    name: String,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        // Drains stdout for the process's whole life.
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Proc {
            child,
            name: name.to_string(),
            lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first stdout line containing `needle`.
    pub fn wait_line(&self, needle: &str, timeout: Duration, log: &Path) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "{} did not print {needle:?} within {timeout:?} (exited or hung); its log: {}",
                    self.name,
                    log.display()
                ),
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of the `key` word (`key=value`) in `line`.
pub fn word(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_string()
}

/// A release binary next to this example's directory.
pub fn release_bin(name: &str) -> PathBuf {
    // target/release/examples/scale -> target/release/<name>
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(name);
    assert!(
        exe.exists(),
        "{} is missing: cargo build --release -p mesh-agent --bin mesh-agent; \
         cargo build --release -p mesh-proxy --bin mesh-proxy (on its own: built with \
         an example, mesh-proxy's dev-dependencies give it the embedded agent)",
        exe.display()
    );
    exe
}

/// A running `mesh-agent`.
pub struct Agent {
    pub proc: Proc,
    /// The address proxies subscribe on (`host:port`): its sync port, or its
    /// plaintext config-only port when it has one (the sync port speaks TLS
    /// and wants pod tokens when the agent runs its CA, as in Kubernetes).
    pub sync: String,
    /// Its debug address (`/metrics`).
    pub debug: String,
    /// Spawn to the "listening" line.
    pub started_in: Duration,
}

/// How an agent is started: its source flags, its environment, and whether
/// proxies use a plaintext config-only port.
pub struct AgentCmd {
    pub source: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Proxies subscribe on `--plaintext-listen` instead of `--listen`.
    pub plaintext: bool,
}

/// Starts the release `mesh-agent` as `how` says, the port proxies use on
/// `listen`, and waits for its "listening" line.
pub fn start_agent(how: &AgentCmd, listen: &str, log: &Path) -> Agent {
    let mut cmd = Command::new(release_bin("mesh-agent"));
    cmd.args(&how.source);
    if how.plaintext {
        cmd.args(["--listen", "127.0.0.1:0", "--plaintext-listen", listen]);
    } else {
        cmd.args(["--listen", listen]);
    }
    cmd.args(["--debug-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .envs(how.env.iter().cloned());
    let t = Instant::now();
    let proc = Proc::spawn("mesh-agent", cmd, log);
    let line = proc.wait_line("sync=", Duration::from_secs(300), log);
    let key = if how.plaintext { "plaintext=" } else { "sync=" };
    Agent {
        sync: word(&line, key),
        debug: word(&line, "debug="),
        started_in: t.elapsed(),
        proc,
    }
}

/// Clock ticks per second (`/proc` CPU times are in ticks).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Handshakes the kernel dropped because a listener's accept queue was full
/// (`TcpExtListenOverflows` of this network namespace): each one costs a
/// proxy a 1 s (then 3, 7, 15 s) retransmission before it connects.
pub fn listen_overflows() -> u64 {
    let s = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut ext = s.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (ext.next(), ext.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_secs(pid: u32, tck: f64) -> f64 {
    let (user, kernel) = cpu_split(pid, tck);
    user + kernel
}

/// utime and stime of `pid` (all its threads), in seconds: what it ran
/// itself, and what the kernel ran for it (its syscalls, and the loopback
/// peer's TCP receive path its sends run).
pub fn cpu_split(pid: u32, tck: f64) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) / tck, ticks(12) / tck)
}

/// Context switches of `pid` so far, summed over its threads (voluntary:
/// a thread that parked for want of work, then woke for the next event;
/// involuntary: preempted).
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut n = 0;
    for t in tasks.flatten() {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        n += s
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    n
}

/// VmRSS of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") / 1024.0
}

/// A `/proc/PID/status` line's value in KiB (0 when absent).
pub fn status_kib(pid: u32, key: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

/// GET over HTTP/1.0 (no chunking): status and body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    Ok((code, body.to_string()))
}

/// The agent's `mesh_agent_view_{messages,bytes}_total` counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ViewCounters {
    pub full_msgs: f64,
    pub delta_msgs: f64,
    pub full_bytes: f64,
    pub delta_bytes: f64,
    /// Version-only messages to proxies whose view a change leaves alone.
    pub unchanged_msgs: f64,
    pub unchanged_bytes: f64,
}

/// The agent's view-message counters, from `/metrics` on its `debug` address.
pub fn view_counters(debug: &str) -> ViewCounters {
    let (code, body) = http_get(debug, "/metrics").unwrap_or_else(|e| panic!("/metrics: {e}"));
    assert_eq!(code, 200, "/metrics answered {code}");
    let opt = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    let get = |name: &str| opt(name).unwrap_or_else(|| panic!("/metrics has no {name}"));
    let opt = |name: &str| opt(name).unwrap_or(0.0);
    ViewCounters {
        full_msgs: get("mesh_agent_view_messages_total{kind=\"full\"}"),
        delta_msgs: get("mesh_agent_view_messages_total{kind=\"delta\"}"),
        full_bytes: get("mesh_agent_view_bytes_total{kind=\"full\"}"),
        delta_bytes: get("mesh_agent_view_bytes_total{kind=\"delta\"}"),
        unchanged_msgs: opt("mesh_agent_view_messages_total{kind=\"unchanged\"}"),
        unchanged_bytes: opt("mesh_agent_view_bytes_total{kind=\"unchanged\"}"),
    }
}

/// Raises the soft open-file limit (to the hard one, at most 65,536) and
/// asserts it covers `need`.
pub fn raise_nofile(need: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = hard.min(65_536).max(soft);
    if want > soft {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
    println!("open-file limit: {want} (hard {hard}; needs about {need})");
    assert!(
        want >= need,
        "the open-file limit ({want}) is too low for this many proxies: run `ulimit -n 65536` (as root) first"
    );
}

/// A process's CPU seconds so far and its RSS.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub cpu_s: f64,
    pub rss_mib: f64,
}

pub fn sample(pid: u32, tck: f64) -> Sample {
    Sample {
        cpu_s: cpu_secs(pid, tck),
        rss_mib: rss_mib(pid),
    }
}
