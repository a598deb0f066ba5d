//! The host-port forwarder of a local mesh (what a NodePort is in a cluster):
//! one process, started by `meshctl local` in the host's network namespace,
//! binds `127.0.0.1:HOSTPORT` for every published Service port, then moves
//! itself into the node namespace, so every connection it opens to a pod
//! starts from the node, where the pod bridge is. The listening sockets stay
//! in the host namespace. Targets are read from the table file for each
//! connection, so new endpoints need no restart.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One published port: where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The Service port.
    pub port: u16,
    /// Ready endpoints (`pod IP:targetPort`).
    pub targets: Vec<String>,
}

/// The table file: host port → entry.
pub type Table = BTreeMap<u16, Entry>;

/// Why the forwarder cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("entering network namespace {netns}: {source}")]
    Netns { netns: String, source: nix::Error },
    #[error("opening network namespace {netns}: {source}")]
    OpenNetns {
        netns: String,
        source: std::io::Error,
    },
}

/// Reads the table; a missing or half-written file is an empty table (the
/// connection is closed, as a NodePort without endpoints refuses).
pub fn read_table(path: &Path) -> Table {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Moves the calling thread into the named network namespace (sockets bound
/// before stay where they were). Call it before any other thread starts, so
/// every later thread inherits the namespace.
pub fn enter_netns(netns: &str) -> Result<(), ForwardError> {
    let ns_path = Path::new("/var/run/netns").join(netns);
    let f = std::fs::File::open(&ns_path).map_err(|source| ForwardError::OpenNetns {
        netns: netns.to_string(),
        source,
    })?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
        ForwardError::Netns {
            netns: netns.to_string(),
            source,
        }
    })
}

/// Runs the forwarder until killed.
pub fn serve(netns: &str, table: PathBuf, ports: &[u16]) -> Result<(), ForwardError> {
    let mut listeners = Vec::new();
    for &port in ports {
        let l = TcpListener::bind(("127.0.0.1", port))
            .map_err(|source| ForwardError::Bind { port, source })?;
        listeners.push((port, l));
    }
    // Single-threaded up to here: every thread started afterwards inherits
    // the node namespace.
    enter_netns(netns)?;
    let list: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    println!("meshctl forwarder listening on {}", list.join(" "));
    let table = Arc::new(table);
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for (port, l) in listeners {
        let table = table.clone();
        let next = next.clone();
        handles.push(std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let table = table.clone();
                let next = next.clone();
                std::thread::spawn(move || handle(conn, port, &table, &next));
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Connects to the first target that accepts, starting round-robin.
fn connect(targets: &[String], next: &AtomicUsize) -> Option<(TcpStream, String)> {
    let n = targets.len();
    let start = next.fetch_add(1, Ordering::Relaxed);
    (0..n).find_map(|i| {
        let t = &targets[(start + i) % n];
        let addr: SocketAddr = t.parse().ok()?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .ok()
            .map(|s| (s, t.clone()))
    })
}

fn handle(client: TcpStream, port: u16, table: &Path, next: &AtomicUsize) {
    let entry = read_table(table).remove(&port);
    let targets = entry.map(|e| e.targets).unwrap_or_default();
    let Some((upstream, _)) = connect(&targets, next) else {
        eprintln!("127.0.0.1:{port}: no endpoint accepted the connection ({targets:?})");
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(client, upstream));
    pipe(u2, c2);
    let _ = up.join();
}

/// Copies until EOF, then half-closes the other side (so HTTP/1.0-style and
/// shutdown-delimited protocols see the end).
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trip_and_garbage_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("forward.json");
        assert!(read_table(&p).is_empty());
        std::fs::write(&p, "{not json").unwrap();
        assert!(read_table(&p).is_empty());
        let t: Table = [(
            31000,
            Entry {
                service: "istio-system/istio-ingressgateway".into(),
                port: 80,
                targets: vec!["10.22.0.5:8080".into()],
            },
        )]
        .into();
        std::fs::write(&p, serde_json::to_vec(&t).unwrap()).unwrap();
        assert_eq!(read_table(&p), t);
    }

    #[test]
    fn round_robin_skips_targets_that_refuse() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        // A port nothing listens on: bound then closed.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let targets = vec![dead.to_string(), a.local_addr().unwrap().to_string()];
        let next = AtomicUsize::new(0);
        for _ in 0..3 {
            let (_, t) = connect(&targets, &next).unwrap();
            assert_eq!(t, targets[1]);
        }
        assert!(connect(&[dead.to_string()], &next).is_none());
        assert!(connect(&[], &next).is_none());
    }
}
