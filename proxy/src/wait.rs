//! `mesh-proxy wait`: blocks until the local sidecar reports ready, for
//! `holdApplicationUntilProxyStarts` (the injector runs it as the app's
//! postStart hook, so the app starts only once its traffic can flow).

use std::time::{Duration, Instant};

/// Polls `url` (an `http://host:port/path` on loopback) until it answers 200.
pub fn until_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--url {url:?} must start with http://"))?;
    let (hostport, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let deadline = Instant::now() + timeout;
    loop {
        if probe(hostport, &path).unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the sidecar was not ready at {url} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn probe(hostport: &str, path: &str) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf)?;
    Ok(buf[..n].starts_with(b"HTTP/1.1 200"))
}
