//! Minimal HTTP/1.1 GET for the loopback-only debug and admin endpoints (proxy
//! admin 15000, agent debug 15014), over TLS for the webhook's `/version`, and
//! over a port-forwarded stream (cluster.rs). One request per connection;
//! chunked bodies are decoded.

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: &str) -> anyhow::Result<std::net::TcpStream> {
    let sa = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let s = std::net::TcpStream::connect_timeout(&sa, TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    Ok(s)
}

fn request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
}

fn exchange(mut s: impl Read + Write, addr: &str, path: &str) -> anyhow::Result<String> {
    // One write: a server may answer and close as soon as it has the request.
    s.write_all(request(addr, path).as_bytes())?;
    s.flush()?;
    let mut buf = Vec::new();
    // A TLS peer may close without close_notify; what arrived is still the answer.
    if let Err(e) = s.read_to_end(&mut buf) {
        if buf.is_empty() {
            return Err(e.into());
        }
    }
    body_of(buf, path)
}

/// The same exchange over any byte stream (a port-forwarded one). The answer ends
/// at its Content-Length or last chunk, or when the far end closes: a forwarded
/// stream need not close when the pod's side does.
pub async fn exchange_async<S>(mut s: S, host: &str, path: &str) -> anyhow::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(request(host, path).as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if is_complete(&buf) {
            break;
        }
    }
    if buf.is_empty() {
        bail!("GET {path}: the connection closed without an answer");
    }
    body_of(buf, path)
}

/// Whether `buf` holds a whole response (head, then Content-Length bytes or a
/// chunked body through its last chunk).
fn is_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n")
}

/// The body of a 200 answer (chunked decoded); any other status is an error naming it.
fn body_of(buf: Vec<u8>, path: &str) -> anyhow::Result<String> {
    let text = String::from_utf8(buf).context("response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200 ") {
        bail!("GET {path} answered {status:?}");
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        Ok(body.to_string())
    }
}

/// GET `path` from `addr` (host:port) over plain HTTP, the body as text.
pub fn get_text(addr: &str, path: &str) -> anyhow::Result<String> {
    exchange(connect(addr)?, addr, path)
}

/// GET `path` from `addr` (host:port) over plain HTTP, the body as JSON.
pub fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let body = exchange(connect(addr)?, addr, path)?;
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body:.200}"))
}

/// GET `path` over HTTPS. With `ca_pem` the server must chain to it under
/// `server_name`; without, the certificate is not checked (only version
/// information is read, nothing is sent).
pub fn get_json_tls(
    addr: &str,
    server_name: &str,
    ca_pem: Option<&[u8]>,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let cfg = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                roots.add(c.context("CA PEM")?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .with_context(|| format!("server name {server_name:?}"))?;
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name)?;
    let tls = rustls::StreamOwned::new(conn, connect(addr)?);
    let body = exchange(tls, addr, path)?;
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body:.200}"))
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunk")?;
        let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("short chunk")?);
        body = rest.get(n + 2..).context("short chunk")?;
    }
}

/// Columns padded to their widest cell, two spaces apart (istioctl's layout).
pub fn table(rows: &[Vec<String>]) -> String {
    table_with_gap(rows, "  ")
}

/// Columns padded to their widest cell, `gap` apart; trailing blanks trimmed.
pub fn table_with_gap<R: AsRef<[String]>>(rows: &[R], gap: &str) -> String {
    let cols = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.as_ref().get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .as_ref()
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        out.push_str(line.join(gap).trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_at_its_length_or_last_chunk() {
        let h = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
        assert!(!is_complete(&h[..10]));
        assert!(!is_complete(&[&h[..], b"abc"].concat()));
        assert!(is_complete(&[&h[..], b"abcd"].concat()));
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        assert!(!is_complete(c));
        let whole = [&c[..], b"0\r\n\r\n"].concat();
        assert!(is_complete(&whole));
        assert_eq!(body_of(whole, "/x").unwrap(), "abc");
        // Without either, only the close ends it.
        assert!(!is_complete(b"HTTP/1.1 200 OK\r\n\r\nabc"));
    }
}
