//! Connections that may be mTLS: the dial parameters for an upstream (config
//! with the right ALPN and Istio's SNI) and a stream type that is plain TCP,
//! TLS origination (tokio-rustls) or mesh mTLS (our record layer), so the
//! pools and the TCP splice handle all three.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::certs::TlsState;
use super::session::TlsConn;
use super::UpstreamTls;
use crate::snapshot::{Cluster, Endpoint};

/// What an mTLS upstream connection is made with.
#[derive(Clone)]
pub struct TlsDial {
    pub config: Arc<rustls::ClientConfig>,
    pub sni: Sni,
    /// Pools keep connections apart per TLS settings (never 0: plaintext).
    pub pool_key: u64,
    /// Mesh identities the server must present (auto mTLS / ISTIO_MUTUAL).
    pub expected: Option<super::originate::Sans>,
}

/// The server name a connection is dialled with. A mesh cluster's is built
/// only when a connection is made: every request asks for its endpoint's
/// `TlsDial` to find a pooled connection, and formatting and validating the
/// name each time was 1.5 % of an mTLS sidecar's instructions per request.
#[derive(Debug, Clone)]
pub enum Sni {
    /// As configured (TLS origination: the DestinationRule's `sni` or host).
    Name(ServerName<'static>),
    /// Istio's SNI for mesh traffic, naming the cluster:
    /// `outbound_.<port>_._.<host>`; the host if that is not a valid name,
    /// else the endpoint's address.
    Mesh {
        port: u16,
        host: Arc<str>,
        ip: IpAddr,
    },
}

impl Sni {
    pub fn server_name(&self) -> ServerName<'static> {
        match self {
            Sni::Name(n) => n.clone(),
            Sni::Mesh { port, host, ip } => {
                ServerName::try_from(format!("outbound_.{port}_._.{host}"))
                    .or_else(|_| ServerName::try_from(host.to_string()))
                    .unwrap_or_else(|_| ServerName::IpAddress((*ip).into()))
            }
        }
    }
}

/// Which application protocol the upstream connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
    Tcp,
}

impl TlsDial {
    /// Handshakes over `tcp`. Mesh mTLS (a pinned identity) runs on our
    /// record layer ([`super::session`]); TLS origination, which may meet
    /// TLS 1.2 servers, on tokio-rustls.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<MaybeTls> {
        let sni = self.sni.server_name();
        let timeout = std::time::Duration::from_secs(10);
        let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
        let logged = |e: io::Error| {
            tracing::debug!(?sni, error = %e, "upstream TLS handshake failed");
            e
        };
        let Some(expected) = &self.expected else {
            let c = tokio_rustls::TlsConnector::from(self.config.clone());
            let tls = tokio::time::timeout(timeout, c.connect(sni.clone(), tcp))
                .await
                .map_err(timed_out)?
                .map_err(logged)?;
            return Ok(MaybeTls::Tls(Box::new(tls)));
        };
        let connect = super::handshake::connect(self.config.clone(), sni.clone(), tcp);
        let (tls, peer) = tokio::time::timeout(timeout, connect)
            .await
            .map_err(timed_out)?
            .map_err(logged)?;
        // SAN pinning: checked before a single byte of the request is written.
        let leaf = peer.certs.first().map(|c| c.as_ref()).unwrap_or_default();
        if let Err(reason) = super::verify::check_identity(leaf, expected) {
            tracing::warn!(?sni, %reason, "upstream refused: wrong mesh identity");
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, reason));
        }
        Ok(MaybeTls::Mesh(Box::new(tls)))
    }

    /// How to reach `ep` of `cluster`: `Ok(None)` for plaintext, an error when
    /// the DestinationRule demands ISTIO_MUTUAL and we have no certificate yet.
    pub fn for_endpoint(
        state: &TlsState,
        cluster: &Cluster,
        ep: &Endpoint,
        alpn: Alpn,
    ) -> io::Result<Option<TlsDial>> {
        let (creds, expected) = match &ep.tls {
            UpstreamTls::Plaintext => return Ok(None),
            UpstreamTls::Originate(o) => {
                let o = o.0.as_ref().as_ref().map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("TLS origination for {}: {e}", cluster.name),
                    )
                })?;
                let config = match alpn {
                    Alpn::Http1 => o.h1.clone(),
                    Alpn::Http2 => o.h2.clone(),
                    Alpn::Tcp => o.tcp.clone(),
                };
                return Ok(Some(TlsDial {
                    config,
                    sni: Sni::Name(o.sni.clone()),
                    pool_key: o.pool_key,
                    expected: None,
                }));
            }
            UpstreamTls::Auto(sans) => match state.current() {
                Some(c) => (c, sans),
                None => return Ok(None),
            },
            UpstreamTls::IstioMutual(sans) => (
                state.current().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotConnected,
                        "ISTIO_MUTUAL: no workload certificate yet",
                    )
                })?,
                sans,
            ),
        };
        let config = match alpn {
            Alpn::Http1 => creds.client_h1.clone(),
            Alpn::Http2 => creds.client_h2.clone(),
            Alpn::Tcp => creds.client_tcp.clone(),
        };
        Ok(Some(TlsDial {
            config,
            sni: Sni::Mesh {
                port: cluster.port,
                host: cluster.host.clone(),
                ip: ep.addr.ip(),
            },
            pool_key: super::originate::pool_key(("mesh", &**expected)),
            expected: Some(expected.clone()),
        }))
    }
}

/// A client connection: plaintext, TLS origination or mesh mTLS.
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Mesh(Box<TlsConn<TcpStream>>),
}

impl MaybeTls {
    /// The socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => s.get_ref().0,
            MaybeTls::Mesh(s) => s.get_ref(),
        }
    }
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
            MaybeTls::Mesh(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            MaybeTls::Mesh(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Mesh(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Mesh(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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
            MaybeTls::Mesh(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
            MaybeTls::Mesh(s) => s.is_write_vectored(),
        }
    }
}
