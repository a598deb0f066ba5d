//! The small slice of Kubernetes the plugin needs: read a kubeconfig (server, CA,
//! bearer token or token file) and GET one pod, blocking, with a timeout. HTTP/1.0 over
//! a plain or rustls TLS stream keeps the plugin binary small and its start fast (no
//! async runtime for one request).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use crate::pod_object::Pod;

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("cannot read kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("invalid API server URL {0:?}")]
    Url(String),
    #[error("cannot reach API server {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("API server {server} answered {status} for {path}: {body}")]
    Status {
        server: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("cannot decode pod from {path}: {reason}")]
    Decode { path: String, reason: String },
}

/// What the plugin takes from a kubeconfig (the current context's cluster and user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubeconfig {
    pub server: String,
    pub ca_pem: Option<Vec<u8>>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub insecure: bool,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct RawCluster {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawUser {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawContext {
    cluster: String,
    user: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct RawKubeconfig {
    clusters: Vec<Named<RawCluster>>,
    users: Vec<Named<RawUser>>,
    contexts: Vec<Named<RawContext>>,
    current_context: String,
}

impl Kubeconfig {
    pub fn load(path: &Path) -> Result<Kubeconfig, K8sError> {
        let err = |reason: String| K8sError::Kubeconfig {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let raw: RawKubeconfig = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
        let ctx = raw
            .contexts
            .iter()
            .find(|c| c.name == raw.current_context)
            .or(raw.contexts.first());
        let cluster = match ctx {
            Some(c) => raw.clusters.iter().find(|k| k.name == c.value.cluster),
            None => raw.clusters.first(),
        }
        .ok_or_else(|| err("no cluster".into()))?;
        let user = match ctx {
            Some(c) => raw.users.iter().find(|u| u.name == c.value.user),
            None => raw.users.first(),
        };
        let ca_pem = match (
            &cluster.value.certificate_authority_data,
            &cluster.value.certificate_authority,
        ) {
            (Some(d), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map_err(|e| err(format!("certificate-authority-data: {e}")))?,
            ),
            (None, Some(p)) => Some(
                std::fs::read(p)
                    .map_err(|e| err(format!("certificate-authority {}: {e}", p.display())))?,
            ),
            (None, None) => None,
        };
        Ok(Kubeconfig {
            server: cluster.value.server.clone(),
            ca_pem,
            token: user.and_then(|u| u.value.token.clone()),
            token_file: user.and_then(|u| u.value.token_file.clone()),
            insecure: cluster.value.insecure_skip_tls_verify,
        })
    }

    fn bearer(&self) -> Option<String> {
        if let Some(f) = &self.token_file {
            if let Ok(t) = std::fs::read_to_string(f) {
                return Some(t.trim().to_string());
            }
        }
        self.token.clone()
    }
}

struct Url {
    tls: bool,
    host: String,
    port: u16,
    prefix: String,
}

fn parse_url(s: &str) -> Result<Url, K8sError> {
    let bad = || K8sError::Url(s.to_string());
    let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_string()),
        None => (rest, String::new()),
    };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or_else(bad)?;
        (h.to_string(), p.strip_prefix(':').map(str::to_string))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None if tls => 443,
        None => 80,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Url {
        tls,
        host,
        port,
        prefix,
    })
}

fn tls_config(kc: &Kubeconfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = &kc.ca_pem {
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            roots
                .add(cert.map_err(|e| format!("CA: {e}"))?)
                .map_err(|e| format!("CA: {e}"))?;
        }
    }
    if roots.is_empty() && !kc.insecure {
        return Err("no CA certificate in kubeconfig".into());
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// GETs `path` and returns `(status, body)`.
fn get(kc: &Kubeconfig, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), K8sError> {
    let url = parse_url(&kc.server)?;
    let unreachable = |reason: String| K8sError::Unreachable {
        server: kc.server.clone(),
        reason,
    };
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| unreachable(e.to_string()))?;
    tcp.set_read_timeout(Some(timeout)).ok();
    tcp.set_write_timeout(Some(timeout)).ok();
    let full_path = format!("{}{path}", url.prefix);
    let mut req = format!(
        "GET {full_path} HTTP/1.0\r\nHost: {}:{}\r\nAccept: application/json\r\nUser-Agent: mesh-cni\r\n",
        url.host, url.port
    );
    if let Some(t) = kc.bearer() {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    let mut raw = Vec::new();
    if url.tls {
        let cfg = tls_config(kc).map_err(unreachable)?;
        let name = rustls_pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(req.as_bytes())
            .map_err(|e| unreachable(e.to_string()))?;
        read_all(&mut s, &mut raw).map_err(|e| unreachable(e.to_string()))?;
    } else {
        let mut s = tcp;
        s.write_all(req.as_bytes())
            .map_err(|e| unreachable(e.to_string()))?;
        read_all(&mut s, &mut raw).map_err(|e| unreachable(e.to_string()))?;
    }
    parse_response(&raw).ok_or_else(|| unreachable("malformed HTTP response".into()))
}

fn read_all(r: &mut impl Read, out: &mut Vec<u8>) -> std::io::Result<()> {
    match r.read_to_end(out) {
        Ok(_) => Ok(()),
        // TLS peers that close without close_notify: the body is complete by then.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Reads one pod; `Ok(None)` when the API server says it does not exist.
pub fn get_pod(
    kc: &Kubeconfig,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Option<Pod>, K8sError> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
    let (status, body) = get(kc, &path, timeout)?;
    match status {
        200 => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| K8sError::Decode {
                path,
                reason: e.to_string(),
            }),
        404 => Ok(None),
        s => Err(K8sError::Status {
            server: kc.server.clone(),
            path,
            status: s,
            body: String::from_utf8_lossy(&body).chars().take(300).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_responses() {
        let u = parse_url("https://10.96.0.1:6443/prefix/").unwrap();
        assert!(u.tls && u.host == "10.96.0.1" && u.port == 6443 && u.prefix == "/prefix");
        let u = parse_url("http://[::1]:8080").unwrap();
        assert!(!u.tls && u.host == "::1" && u.port == 8080);
        assert!(parse_url("ftp://x").is_err());
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"abcde"[..]));
    }
}
