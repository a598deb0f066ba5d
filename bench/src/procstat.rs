//! CPU time and resident memory of a process, read from `/proc`.
//!
//! CPU is `utime + stime` of `/proc/<pid>/stat` (every thread of the process,
//! also ones that have exited), in clock ticks; RSS is `VmRSS` of
//! `/proc/<pid>/status`. Read and write system calls (`syscr` + `syscw` of
//! `/proc/<pid>/io`) show how much of a proxy's cost is the kernel's.

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux unless asked otherwise).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    cpu_split(pid).map(|(u, s)| u + s)
}

/// The fields of `/proc/<pid>/stat` from field 3 (the state) on: the command
/// name before them may contain spaces, so they resume after the last ')'.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field `n` (numbered as in stat(5)) of `fields` from [`stat_fields`].
fn stat_field<T: std::str::FromStr>(fields: &[String], n: usize) -> Option<T> {
    fields.get(n - 3)?.parse().ok()
}

/// CPU seconds the process has used so far: (user, system).
pub fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let f = stat_fields(pid)?;
    let utime: f64 = stat_field(&f, 14)?;
    let stime: f64 = stat_field(&f, 15)?;
    Some((utime / clk_tck(), stime / clk_tck()))
}

/// Whether the process's main thread runs in `SCHED_BATCH` (policy 3, field
/// 41 of stat(5)): mesh-proxy's `--cpu-policy adaptive` moves all its threads
/// between that class and `SCHED_OTHER` together.
pub fn sched_batch(pid: u32) -> Option<bool> {
    let policy: u32 = stat_field(&stat_fields(pid)?, 41)?;
    Some(policy == 3)
}

/// Read-like plus write-like system calls so far (every thread).
pub fn syscalls(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |k: &str| -> Option<u64> {
        io.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("syscr:")? + field("syscw:")?)
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory only this process holds (`Private_Clean + Private_Dirty` of
/// `/proc/<pid>/smaps_rollup`): what one more sidecar costs, since the
/// binary's text pages are shared by every process running it.
pub fn private_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kb = |k: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((kb("Private_Clean:")? + kb("Private_Dirty:")?) * 1024)
}

/// The program a spawned pod process really is: `ip netns exec` and `setpriv`
/// normally exec in place, but if either forked, follow its only child.
pub fn resolve(pid: u32) -> u32 {
    let mut pid = pid;
    for _ in 0..4 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !matches!(comm.trim(), "ip" | "setpriv") {
            break;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        match children.split_whitespace().collect::<Vec<_>>().as_slice() {
            [only] => match only.parse() {
                Ok(c) => pid = c,
                Err(_) => break,
            },
            _ => break,
        }
    }
    pid
}

/// Whether `pid` is alive (a zombie, exited but not yet reaped, is not).
pub fn alive(pid: u32) -> bool {
    let state = stat_fields(pid).and_then(|f| stat_field::<String>(&f, 3));
    !matches!(state.as_deref(), None | Some("Z") | Some("X"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        // Burn a little CPU so the counter is certainly non-zero.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(cpu_secs(me).unwrap() > 0.0);
        let (user, _sys) = cpu_split(me).unwrap();
        assert!(user > 0.0);
        let before = syscalls(me).unwrap();
        std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(syscalls(me).unwrap() > before);
        assert!(rss_bytes(me).unwrap() > 1024 * 1024);
        let private = private_bytes(me).unwrap();
        assert!(private > 0 && private <= rss_bytes(me).unwrap());
        assert_eq!(resolve(me), me);
        assert!(alive(me));
        assert_eq!(cpu_secs(u32::MAX), None);
    }

    #[test]
    fn reads_the_scheduling_class_the_kernel_reports() {
        // `chrt` (util-linux, essential in Debian) starts a child in each class.
        for (flag, batch) in [("-o", false), ("-b", true)] {
            let mut child = std::process::Command::new("chrt")
                .args([flag, "0", "sleep", "30"])
                .spawn()
                .expect("chrt");
            let pid = child.id();
            // chrt sets the class, then execs sleep in place: wait for that.
            let mut seen = None;
            for _ in 0..200 {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
                if comm.trim() == "sleep" {
                    seen = sched_batch(pid);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(seen, Some(batch), "chrt {flag}");
        }
        assert_eq!(sched_batch(u32::MAX), None);
    }
}
