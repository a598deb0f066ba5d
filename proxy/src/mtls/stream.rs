//! Connections that may be mTLS: the dial parameters for an upstream (config
//! with the right ALPN and Istio's SNI) and a stream type that is either plain
//! TCP or client TLS, so the pools and the TCP splice handle both.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::certs::TlsState;
use super::UpstreamTls;
use crate::snapshot::{Cluster, Endpoint};

/// What an mTLS upstream connection is made with.
#[derive(Clone)]
pub struct TlsDial {
    pub config: Arc<rustls::ClientConfig>,
    pub sni: ServerName<'static>,
}

/// Which application protocol the upstream connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
    Tcp,
}

impl TlsDial {
    pub async fn connect(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let c = tokio_rustls::TlsConnector::from(self.config.clone());
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            c.connect(self.sni.clone(), tcp),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "mTLS handshake timed out"))?
    }

    /// How to reach `ep` of `cluster`: `Ok(None)` for plaintext, an error when
    /// the DestinationRule demands ISTIO_MUTUAL and we have no certificate yet.
    pub fn for_endpoint(
        state: &TlsState,
        cluster: &Cluster,
        ep: &Endpoint,
        alpn: Alpn,
    ) -> io::Result<Option<TlsDial>> {
        let creds = match ep.tls {
            UpstreamTls::Plaintext => return Ok(None),
            UpstreamTls::Auto => match state.current() {
                Some(c) => c,
                None => return Ok(None),
            },
            UpstreamTls::IstioMutual => state.current().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "ISTIO_MUTUAL: no workload certificate yet",
                )
            })?,
        };
        let config = match alpn {
            Alpn::Http1 => creds.client_h1.clone(),
            Alpn::Http2 => creds.client_h2.clone(),
            Alpn::Tcp => creds.client_tcp.clone(),
        };
        // Istio's SNI for mesh traffic names the cluster: outbound_.<port>_.<subset>_.<host>.
        let sni = ServerName::try_from(format!("outbound_.{}_._.{}", cluster.port, cluster.host))
            .or_else(|_| ServerName::try_from(cluster.host.to_string()))
            .unwrap_or_else(|_| ServerName::IpAddress(ep.addr.ip().into()));
        Ok(Some(TlsDial { config, sni }))
    }
}

/// A client connection, plaintext or mTLS.
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}
