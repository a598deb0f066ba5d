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

use anyhow::{bail, Context};
use nix::sys::resource::{getrusage, UsageWho};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Args {
    proxies: usize,
    changes: usize,
    frame: usize,
    ack: usize,
    gap: Duration,
    /// One task writes every stream, then reads every ack (no task per stream).
    one_task: bool,
}

fn args() -> anyhow::Result<(bool, Args)> {
    let mut a = Args {
        proxies: 52,
        changes: 150,
        frame: 1780,
        ack: 40,
        gap: Duration::from_millis(250),
        one_task: false,
    };
    let mut peer = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "peer" {
            peer = true;
            continue;
        }
        if k == "--one-task" {
            a.one_task = true;
            continue;
        }
        let v: u64 = it
            .next()
            .with_context(|| format!("{k} needs a value"))?
            .parse()
            .with_context(|| format!("{k}: not a number"))?;
        match k.as_str() {
            "--proxies" => a.proxies = v as usize,
            "--changes" => a.changes = v as usize,
            "--frame" => a.frame = v as usize,
            "--ack" => a.ack = v as usize,
            "--gap-ms" => a.gap = Duration::from_millis(v),
            _ => bail!("unknown option {k}"),
        }
    }
    if a.frame < 4 || a.ack == 0 || a.proxies == 0 {
        bail!("--frame must be at least 4, --ack and --proxies at least 1");
    }
    Ok((peer, a))
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
    let mut frame = vec![b'd'; a.frame];
    frame[..4].copy_from_slice(&((a.frame - 4) as u32).to_be_bytes());
    let frame: Arc<[u8]> = frame.into();
    let mut streams = Vec::with_capacity(a.proxies);
    for _ in 0..a.proxies {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    if a.one_task {
        let (frame, acked, all_acked, ack) =
            (frame.clone(), acked.clone(), all_acked.clone(), a.ack);
        let mut rx = rx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; ack];
            while rx.changed().await.is_ok() {
                for s in &mut streams {
                    if s.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                for s in &mut streams {
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                }
                acked.store(streams.len(), Ordering::Release);
                all_acked.notify_one();
            }
        });
        streams = Vec::new();
    }
    for mut s in streams {
        let (mut rx, frame, acked, all_acked) =
            (rx.clone(), frame.clone(), acked.clone(), all_acked.clone());
        let (n, ack) = (a.proxies, a.ack);
        tokio::spawn(async move {
            let mut buf = vec![0u8; ack];
            while rx.changed().await.is_ok() {
                if s.write_all(&frame).await.is_err() || s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                if acked.fetch_add(1, Ordering::AcqRel) + 1 == n {
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
        tokio::time::sleep(a.gap).await;
    }
    let (u0, k0, c0) = before.expect("measured");
    let (u1, k1, c1) = usage()?;
    let n = a.changes as f64;
    took.sort();
    println!(
        "{} changes to {} streams, {} B frames, {} B acks, {} ms apart",
        a.changes,
        a.proxies,
        a.frame,
        a.ack,
        a.gap.as_millis()
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
    let (is_peer, a) = args()?;
    let rt = tokio::runtime::Runtime::new()?;
    if is_peer {
        return rt.block_on(peer(a.ack));
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(["peer", "--ack", &a.ack.to_string()])
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
