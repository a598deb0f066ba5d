//! The floor under the agent's CPU per change (issue 19): what a process pays
//! on this machine to send one delta to each affected proxy over that proxy's
//! own TCP stream and read its ack, doing nothing else. No watch, no compile,
//! no view, no encoding: a fixed frame written by one task per stream (the
//! agent's shape) and an ack read back, the proxies being tasks of another
//! process on one tokio runtime (the scale benchmark's shape).
//!
//! The scale benchmark's change series sends 51.6 deltas of 1,780 bytes on
//! average per change, one change at a time, 250 ms apart; this does the
//! same with `--proxies 52 --frame 1780 --gap-ms 250` (the defaults) and
//! prints the sender's CPU per change from getrusage, split into user and
//! kernel, and its context switches.
//!
//! `--one-task`: one task writes every stream and then reads every ack, the
//! fewest wake-ups any design can have.
//!
//!   cargo run --release -p mesh-agent --example fanout_floor -- [--proxies N]
//!       [--changes N] [--frame BYTES] [--ack BYTES] [--gap-ms MS] [--one-task]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nix::sys::resource::{getrusage, UsageWho};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The change series with the agent taken out.
#[derive(clap::Parser)]
struct Args {
    /// Streams, one per affected proxy.
    #[arg(long, default_value_t = 52)]
    proxies: usize,
    /// Changes measured (after five to warm up).
    #[arg(long, default_value_t = 150)]
    changes: usize,
    /// Bytes of each delta frame, its 4-byte length prefix included.
    #[arg(long, default_value_t = 1780, value_parser = clap::value_parser!(u32).range(4..))]
    frame: u32,
    /// Bytes of each ack.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    ack: u32,
    /// Milliseconds between changes.
    #[arg(long, default_value_t = 250)]
    gap_ms: u64,
    /// One task writes every stream, then reads every ack (no task per stream).
    #[arg(long)]
    one_task: bool,
    /// Run as the proxies' process (started by the sender itself).
    #[arg(long, hide = true)]
    peer: bool,
}

/// The proxies: each connection reads length-prefixed frames and answers
/// each with an ack of `ack` bytes.
async fn peer(ack: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("port {}", listener.local_addr()?.port());
    loop {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            let reply = vec![b'a'; ack];
            let mut body = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                body.resize(u32::from_be_bytes(len) as usize, 0);
                if s.read_exact(&mut body).await.is_err() || s.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// (user, kernel) CPU seconds and context switches of this process so far.
fn usage() -> anyhow::Result<(f64, f64, i64)> {
    let u = getrusage(UsageWho::RUSAGE_SELF)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok((
        secs(u.user_time()),
        secs(u.system_time()),
        u.voluntary_context_switches() + u.involuntary_context_switches(),
    ))
}

async fn sender(a: &Args, port: u16) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    let acked = Arc::new(AtomicUsize::new(0));
    let all_acked = Arc::new(tokio::sync::Notify::new());
    let mut frame = vec![b'd'; a.frame as usize];
    frame[..4].copy_from_slice(&(a.frame - 4).to_be_bytes());
    let frame: Arc<[u8]> = frame.into();
    let mut streams = Vec::with_capacity(a.proxies);
    for _ in 0..a.proxies {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    // A task per stream, or one task for all of them: each writes its
    // streams' frames, then reads their acks.
    let groups: Vec<Vec<TcpStream>> = if a.one_task {
        vec![streams]
    } else {
        streams.into_iter().map(|s| vec![s]).collect()
    };
    for mut group in groups {
        let (mut rx, frame, acked, all_acked) =
            (rx.clone(), frame.clone(), acked.clone(), all_acked.clone());
        let (n, ack) = (a.proxies, a.ack as usize);
        tokio::spawn(async move {
            let mut buf = vec![0u8; ack];
            while rx.changed().await.is_ok() {
                for s in &mut group {
                    if s.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                for s in &mut group {
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                }
                if acked.fetch_add(group.len(), Ordering::AcqRel) + group.len() == n {
                    all_acked.notify_one();
                }
            }
        });
    }
    let mut before = None;
    let mut took = Vec::with_capacity(a.changes);
    // Five changes to warm up, then the measured series.
    for i in 0..a.changes + 5 {
        if i == 5 {
            before = Some(usage()?);
        }
        acked.store(0, Ordering::Release);
        let start = Instant::now();
        tx.send(i + 1)?;
        tokio::time::timeout(Duration::from_secs(10), all_acked.notified())
            .await
            .context("acks did not all come back within 10 s")?;
        if i >= 5 {
            took.push(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(a.gap_ms)).await;
    }
    let (u0, k0, c0) = before.expect("measured");
    let (u1, k1, c1) = usage()?;
    let n = a.changes as f64;
    took.sort();
    println!(
        "{} changes to {} streams, {} B frames, {} B acks, {} ms apart",
        a.changes, a.proxies, a.frame, a.ack, a.gap_ms
    );
    println!(
        "sender CPU per change: {:.3} ms ({:.3} user, {:.3} kernel); vCPU-s per 1,000 changes: {:.2}",
        (u1 - u0 + k1 - k0) / n * 1e3,
        (u1 - u0) / n * 1e3,
        (k1 - k0) / n * 1e3,
        (u1 - u0 + k1 - k0) / n * 1e3
    );
    println!(
        "context switches per change: {:.1}; all acks back, p50 {:.2} ms, max {:.2} ms",
        (c1 - c0) as f64 / n,
        took[took.len() / 2].as_secs_f64() * 1e3,
        took[took.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        a.proxies > 0 && a.changes > 0,
        "--proxies and --changes must be at least 1"
    );
    let rt = tokio::runtime::Runtime::new()?;
    if a.peer {
        return rt.block_on(peer(a.ack as usize));
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--peer", "--ack", &a.ack.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("peer stdout")?).read_line(&mut line)?;
    let port: u16 = line
        .strip_prefix("port ")
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("peer said {line:?}"))?;
    let r = rt.block_on(sender(&a, port));
    let _ = child.kill();
    let _ = child.wait();
    r
}
