//! How a proxy reaches the agent: plaintext or TLS 1.3 against the mesh roots
//! (re-read at every connection), optionally presenting its workload
//! certificate. Kept apart from the session loop in `mod.rs`, which only asks
//! for a connected stream.

use crate::syncframe::ProtocolError;
use std::sync::Arc;

/// How connections to the agent are secured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Transport {
    /// An agent without CA (config only).
    #[default]
    Plaintext,
    /// TLS 1.3; the agent's certificate must chain to a root in `root_file` and
    /// carry `server_name`.
    Tls {
        root_file: std::path::PathBuf,
        server_name: String,
    },
}

/// A connected, possibly TLS-wrapped, stream to the agent.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A workload certificate to present as TLS client: chain (leaf first) and
/// its PKCS#8 key.
#[derive(Clone)]
pub struct ClientCert {
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key_der: Vec<u8>,
}

/// The certificate to present now (`None`: none yet).
#[derive(Clone)]
pub struct CurrentCert(pub Arc<dyn Fn() -> Option<ClientCert> + Send + Sync>);

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCert")
    }
}

/// Connects to `addr` as `transport` says.
pub async fn connect(addr: &str, transport: &Transport) -> Result<Box<dyn Io>, ProtocolError> {
    connect_as(addr, transport, None).await
}

/// [`connect`], presenting `cert` as TLS client certificate (TLS only).
pub async fn connect_as(
    addr: &str,
    transport: &Transport,
    cert: Option<&ClientCert>,
) -> Result<Box<dyn Io>, ProtocolError> {
    let sock = tokio::net::TcpStream::connect(addr).await?;
    let _ = sock.set_nodelay(true);
    let (root_file, server_name) = match transport {
        Transport::Plaintext => return Ok(Box::new(sock)),
        Transport::Tls {
            root_file,
            server_name,
        } => (root_file, server_name),
    };
    let tls_err = |why: String| ProtocolError::Tls(why);
    let text = tokio::fs::read_to_string(root_file).await.map_err(|e| {
        tls_err(format!(
            "reading the CA root bundle {}: {e}",
            root_file.display()
        ))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for block in pem::parse_many(&text).unwrap_or_default() {
        if block.tag() == "CERTIFICATE" {
            roots
                .add(rustls::pki_types::CertificateDer::from(
                    block.into_contents(),
                ))
                .map_err(|e| tls_err(format!("{}: bad root: {e}", root_file.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(tls_err(format!(
            "the CA root bundle {} holds no certificate",
            root_file.display()
        )));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| tls_err(e.to_string()))?
    .with_root_certificates(roots);
    let cfg = match cert {
        None => cfg.with_no_client_auth(),
        Some(c) => cfg
            .with_client_auth_cert(
                c.chain.clone(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_der.clone().into()),
            )
            .map_err(|e| tls_err(format!("the workload certificate: {e}")))?,
    };
    let name = rustls::pki_types::ServerName::try_from(server_name.clone())
        .map_err(|e| tls_err(format!("server name {server_name:?}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, sock)
        .await
        .map_err(|e| {
            tls_err(format!(
                "TLS to {addr} as {server_name:?} (roots {}): {e}",
                root_file.display()
            ))
        })?;
    Ok(Box::new(tls))
}
