//! The span sink of the tracing variants: a Zipkin v2 receiver on the node's
//! bridge address (where the pods' sidecars reach the node), accepting
//! `POST /api/v2/spans` over kept-alive HTTP/1.1 and counting the spans of
//! each JSON array. It runs in the bench process, outside the sidecars whose
//! CPU is measured, like a collector elsewhere in the cluster.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use mesh_e2e::harness::Node;

/// A running sink; dropping it stops accepting (the sidecars' connections
/// end with the sidecars).
pub struct ZipkinSink {
    /// `ip:port` for the sidecars' `TracingProvider::Zipkin`.
    pub addr: String,
    spans: Arc<AtomicU64>,
    listener: TcpListener,
}

/// Binds `GATEWAY:0` inside the node's network namespace (a thread enters it;
/// the socket stays there).
fn bind_on_node(node: &Node) -> anyhow::Result<TcpListener> {
    let ns = format!("/var/run/netns/{}", node.netns());
    std::thread::spawn(move || -> anyhow::Result<TcpListener> {
        let f = std::fs::File::open(&ns).with_context(|| ns.clone())?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {ns}"))?;
        Ok(TcpListener::bind((mesh_e2e::harness::GATEWAY, 0))?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the bind thread panicked"))?
}

impl ZipkinSink {
    pub fn start(node: &Node) -> anyhow::Result<ZipkinSink> {
        let listener = bind_on_node(node).context("binding the Zipkin sink")?;
        let addr = listener.local_addr()?.to_string();
        let spans = Arc::new(AtomicU64::new(0));
        let (l, s) = (listener.try_clone()?, spans.clone());
        std::thread::spawn(move || {
            // Ends when Drop shuts the listening socket down.
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let s = s.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(c, &s) {
                        eprintln!("mesh-bench: zipkin sink: {e:#}");
                    }
                });
            }
        });
        Ok(ZipkinSink {
            addr,
            spans,
            listener,
        })
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

impl Drop for ZipkinSink {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes the thread blocked in accept.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

/// One kept-alive connection: each request's JSON array adds its length to
/// `spans`; anything but `POST /api/v2/spans` with a JSON array is an error.
fn serve(c: TcpStream, spans: &AtomicU64) -> anyhow::Result<()> {
    let mut w = c.try_clone()?;
    let mut r = BufReader::new(c);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            line.starts_with("POST /api/v2/spans "),
            "unexpected request {line:?}"
        );
        let mut len = None;
        loop {
            line.clear();
            anyhow::ensure!(r.read_line(&mut line)? > 0, "headers cut short");
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = Some(v.trim().parse::<usize>()?);
                }
            }
        }
        let len = len.context("no content-length")?;
        anyhow::ensure!(len <= 64 << 20, "a {len}-byte batch");
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        let batch: Vec<serde::de::IgnoredAny> =
            serde_json::from_slice(&body).context("the body is not a JSON array")?;
        spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
        w.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")?;
    }
}
