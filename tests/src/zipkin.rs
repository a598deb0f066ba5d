//! A Zipkin v2 receiver for the tracing tests: it listens inside a network
//! namespace (the node's, where pods reach the bridge address) and keeps every
//! span POSTed to `/api/v2/spans`, in arrival order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Binds `ip:0` inside network namespace `netns` (a name under /var/run/netns);
/// the listener keeps working from any thread.
pub fn bind_in(netns: &str, ip: &str) -> TcpListener {
    let path = format!("/var/run/netns/{netns}");
    let ip = ip.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        TcpListener::bind((ip.as_str(), 0)).unwrap()
    })
    .join()
    .unwrap()
}

pub struct Collector {
    /// `ip:port` to export to.
    pub addr: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    /// Serves on `l` (HTTP/1.1 keep-alive, one thread per connection).
    pub fn start(l: TcpListener) -> Collector {
        let addr = l.local_addr().unwrap().to_string();
        let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
        let s = spans.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(c, s));
            }
        });
        Collector { addr, spans }
    }

    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` spans carry `x-request-id` `rid`.
    pub fn wait_for(&self, rid: &str, n: usize) -> Vec<Value> {
        self.wait_until(n, |s| s["tags"]["guid:x-request-id"] == rid)
    }

    /// Waits (bounded) until `n` spans satisfy `pick`; returns them.
    pub fn wait_until(&self, n: usize, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<Value> = self.spans().into_iter().filter(|s| pick(s)).collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Serves one HTTP/1.1 keep-alive connection: each request's JSON array body
/// is appended to `spans`.
pub fn serve(c: TcpStream, spans: Arc<Mutex<Vec<Value>>>) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("POST /api/v2/spans "), "{line}");
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let batch: Vec<Value> = serde_json::from_slice(&body).unwrap();
        spans.lock().unwrap().extend(batch);
        w.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    }
}
