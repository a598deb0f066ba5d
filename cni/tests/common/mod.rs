//! Helpers shared by the netns tests: uniquely named network namespaces that are
//! deleted on drop (also when a test panics), and command runners.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "mcni-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Gives the netns a dummy uplink with an address and a default route, so
    /// connections to any address leave through the normal path (and can be captured).
    pub fn with_uplink(self) -> Netns {
        self.exec_ok(&[
            "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1",
        ]);
        self.exec_ok(&["ip", "link", "set", "up1", "up"]);
        self.exec_ok(&["ip", "addr", "add", "10.199.0.2/24", "dev", "up0"]);
        self.exec_ok(&["ip", "link", "set", "up0", "up"]);
        self.exec_ok(&["ip", "route", "add", "default", "dev", "up0"]);
        self
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .env_remove("CNI_COMMAND")
            .output()
            .expect("ip netns exec")
    }

    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `iptables-save` (or ip6tables) of `backend`, without comments and counters.
    pub fn save(&self, backend: &str, v6: bool) -> String {
        let bin = format!(
            "{}-{backend}-save",
            if v6 { "ip6tables" } else { "iptables" }
        );
        normalize_save(&self.exec_ok(&[&bin]))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn normalize_save(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if l.starts_with(':') {
                // ":CHAIN POLICY [pkts:bytes]" -> drop the counters
                l.rsplit_once(' ').map(|(a, _)| a).unwrap_or(l).to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mesh-cni")
}

/// Number of capture records in a plugin state folder.
pub fn state_records(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count()
        })
        .unwrap_or(0)
}
