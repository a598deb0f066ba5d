//! The mesh mTLS handshake, driven through rustls' unbuffered API so that,
//! once it completes, the traffic keys can be handed to our own record layer
//! ([`super::session`]). rustls does all of the handshake: certificates,
//! verification, ALPN, session tickets; we only move bytes.

use std::io;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ClientConfig, ExtractedSecrets, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::session::{Kernel, TlsConn};

/// What the peer proved in the handshake.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Its certificate chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// One side's unbuffered connection, so the code below serves both.
trait Side:
    std::ops::DerefMut<Target = rustls::unbuffered::UnbufferedConnectionCommon<Self::Data>>
{
    type Data;
    fn process<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// The traffic keys, and rustls' part of the session from now on.
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error>;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(buf)
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Client(Box::new(kernel))))
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(buf)
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Server(Box::new(kernel))))
    }
}

/// Runs the handshake to completion. `rbuf` keeps whatever the peer sent
/// after it (records for the record layer); `early` gets the application
/// data rustls already opened: a client's first bytes may share a read with
/// its Finished, and rustls goes on to open them before it yields.
async fn drive<C: Side, S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut C,
    io: &mut S,
    rbuf: &mut BytesMut,
    early: &mut Vec<u8>,
) -> io::Result<Peer> {
    let mut out: Vec<u8> = Vec::new();
    loop {
        let UnbufferedStatus { discard, state } = conn.process(&mut rbuf[..]);
        let mut read = false;
        let mut send = false;
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                // rustls queues an alert saying why; the peer should see it
                // rather than a bare close.
                let status = conn.process(&mut []);
                if let Ok(ConnectionState::EncodeTlsData(mut a)) = status.state {
                    let mut alert = [0u8; 64];
                    if let Ok(n) = a.encode(&mut alert) {
                        let _ = io.write_all(&alert[..n]).await;
                        let _ = io.flush().await;
                    }
                }
                return Err(tls_err(e));
            }
        };
        match state {
            ConnectionState::EncodeTlsData(mut e) => {
                let at = out.len();
                out.resize(at + 4096, 0);
                let n = match e.encode(&mut out[at..]) {
                    Ok(n) => n,
                    Err(EncodeError::InsufficientSize(s)) => {
                        out.resize(at + s.required_size, 0);
                        e.encode(&mut out[at..]).map_err(io::Error::other)?
                    }
                    Err(e) => return Err(io::Error::other(e)),
                };
                out.truncate(at + n);
            }
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                send = true;
            }
            ConnectionState::BlockedHandshake => read = true,
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(record) = r.next_record() {
                    early.extend_from_slice(record.map_err(tls_err)?.payload);
                }
            }
            ConnectionState::WriteTraffic(_) => {
                if !conn.is_handshaking() {
                    rbuf.advance(discard);
                    return Ok(Peer {
                        certs: conn
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                            .unwrap_or_default(),
                        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                    });
                }
                read = true;
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS peer closed during the handshake",
                ))
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected TLS state during the handshake: {other:?}"),
                ))
            }
        }
        rbuf.advance(discard);
        if send {
            io.write_all(&out).await?;
            io.flush().await?;
            out.clear();
        }
        if read {
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 * 1024);
            }
            if io.read_buf(rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS peer closed during the handshake",
                ));
            }
        }
    }
}

/// Dials TLS 1.3 over `io` with a config whose `enable_secret_extraction` is
/// set (the mesh client configs).
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: S,
) -> io::Result<(TlsConn<S>, Peer)> {
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_err)?;
    establish(conn, io).await
}

/// Accepts TLS 1.3 over `io` (the mesh server config).
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<ServerConfig>,
    io: S,
) -> io::Result<(TlsConn<S>, Peer)> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_err)?;
    establish(conn, io).await
}

/// Runs the handshake, then moves the connection onto our record layer.
async fn establish<C: Side, S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: C,
    mut io: S,
) -> io::Result<(TlsConn<S>, Peer)> {
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut early = Vec::new();
    let peer = drive(&mut conn, &mut io, &mut rbuf, &mut early).await?;
    let (secrets, kernel) = conn.into_kernel().map_err(tls_err)?;
    Ok((TlsConn::new(io, rbuf, early, secrets, kernel)?, peer))
}
