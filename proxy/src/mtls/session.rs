//! A mesh mTLS connection after the handshake: our record layer
//! ([`super::record`]) over the socket, as `AsyncRead`/`AsyncWrite`.
//!
//! Incoming records are read into one buffer and opened in place; the
//! caller's read copies the plaintext out once. Outgoing data is sealed
//! straight into the send buffer, one record per write (a vectored write
//! gathers its slices into one record), and written at once. rustls keeps
//! the session: it computes new keys on a key update and stores session
//! tickets ([`Kernel`]).

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::record::{self, Keys, RecordError, ALERT, APPLICATION_DATA, HANDSHAKE, MAX_FRAGMENT};

/// Unsent ciphertext above which a write waits for the socket.
const WRITE_HIGH: usize = 64 * 1024;
/// Send buffer capacity kept between writes.
const WRITE_KEEP: usize = 32 * 1024;
/// Handshake message types after the handshake (RFC 8446 §4).
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// Alert descriptions.
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

/// rustls' side of the session: new traffic secrets, tickets.
pub enum Kernel {
    Client(Box<KernelConnection<ClientConnectionData>>),
    Server(Box<KernelConnection<ServerConnectionData>>),
}

impl Kernel {
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }
    fn ticket(&mut self, payload: &[u8]) -> Result<(), rustls::Error> {
        match self {
            Kernel::Client(k) => k.handle_new_session_ticket(payload),
            Kernel::Server(_) => Err(rustls::Error::General(
                "a client sent a NewSessionTicket".into(),
            )),
        }
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl From<RecordError> for io::Error {
    fn from(e: RecordError) -> Self {
        invalid(e)
    }
}

/// An established mesh mTLS connection.
pub struct TlsConn<S> {
    io: S,
    rx: Keys,
    tx: Keys,
    kernel: Kernel,
    /// Bytes read from the socket. While `plain` is not empty, its front
    /// `opened` bytes are an opened record whose content is `plain`.
    rbuf: BytesMut,
    plain: Range<usize>,
    opened: usize,
    /// Application data rustls opened during the handshake, read first.
    early: Vec<u8>,
    /// A post-handshake handshake message split over records.
    hs: Vec<u8>,
    /// Sealed records not yet written, from `wpos`.
    wbuf: Vec<u8>,
    wpos: usize,
    peer_closed: bool,
    sent_close: bool,
}

impl<S> TlsConn<S> {
    pub(super) fn new(
        io: S,
        rbuf: BytesMut,
        early: Vec<u8>,
        secrets: ExtractedSecrets,
        kernel: Kernel,
    ) -> io::Result<Self> {
        Ok(TlsConn {
            io,
            rx: Keys::new(secrets.rx.1, secrets.rx.0)?,
            tx: Keys::new(secrets.tx.1, secrets.tx.0)?,
            kernel,
            rbuf,
            plain: 0..0,
            opened: 0,
            early,
            hs: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            peer_closed: false,
            sent_close: false,
        })
    }

    /// The socket underneath.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Opens the `n`-byte record at the front of `rbuf`.
    fn open_front(&mut self, n: usize) -> io::Result<()> {
        let (typ, content) = self.rx.open(&mut self.rbuf[..n])?;
        match typ {
            APPLICATION_DATA if !content.is_empty() => {
                self.plain = content;
                self.opened = n;
                return Ok(());
            }
            APPLICATION_DATA => {}
            ALERT => match &self.rbuf[content] {
                [_, CLOSE_NOTIFY] => self.peer_closed = true,
                [_, USER_CANCELED] => {}
                [_, desc] => return Err(invalid(format!("TLS alert {desc} from the peer"))),
                _ => return Err(invalid("malformed TLS alert")),
            },
            HANDSHAKE => {
                self.hs.extend_from_slice(&self.rbuf[content]);
                self.rbuf.advance(n);
                return self.handshake_messages();
            }
            other => {
                return Err(invalid(format!(
                    "unexpected TLS content type {other} after the handshake"
                )))
            }
        }
        self.rbuf.advance(n);
        Ok(())
    }

    /// Handles the complete messages in `hs`: session tickets and key updates.
    fn handshake_messages(&mut self) -> io::Result<()> {
        while self.hs.len() >= 4 {
            let len = u32::from_be_bytes([0, self.hs[1], self.hs[2], self.hs[3]]) as usize;
            if len > 64 * 1024 {
                return Err(invalid(format!("TLS handshake message of {len} bytes")));
            }
            if self.hs.len() < 4 + len {
                return Ok(());
            }
            let body = &self.hs[4..4 + len];
            match self.hs[0] {
                NEW_SESSION_TICKET => self.kernel.ticket(body).map_err(invalid)?,
                KEY_UPDATE => {
                    let requested = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(invalid("malformed TLS KeyUpdate")),
                    };
                    if self.hs.len() != 4 + len {
                        return Err(invalid("TLS KeyUpdate not at the end of its record"));
                    }
                    let (seq, secrets) = self.kernel.update_rx().map_err(invalid)?;
                    self.rx = Keys::new(secrets, seq)?;
                    if requested && !self.sent_close {
                        self.update_tx_key()?;
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unexpected TLS handshake message {other} after the handshake"
                    )))
                }
            }
            self.hs.drain(..4 + len);
        }
        Ok(())
    }

    /// Queues a KeyUpdate under the current key, then switches to the next.
    fn update_tx_key(&mut self) -> io::Result<()> {
        self.tx
            .seal(HANDSHAKE, &[&[KEY_UPDATE, 0, 0, 1, 0]], &mut self.wbuf)?;
        let (seq, secrets) = self.kernel.update_tx().map_err(invalid)?;
        self.tx = Keys::new(secrets, seq)?;
        Ok(())
    }

    fn seal(&mut self, typ: u8, parts: &[&[u8]]) -> io::Result<()> {
        if self.tx.seq() >= record::REKEY_AFTER {
            self.update_tx_key()?;
        }
        self.tx.seal(typ, parts, &mut self.wbuf)?;
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> TlsConn<S> {
    /// Writes out the sealed records.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        if self.wbuf.capacity() > WRITE_KEEP {
            self.wbuf.shrink_to(WRITE_KEEP);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_parts(
        &mut self,
        cx: &mut Context<'_>,
        parts: &[&[u8]],
        n: usize,
    ) -> Poll<io::Result<usize>> {
        if self.sent_close {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS connection already closed for writing",
            )));
        }
        if self.wbuf.len() - self.wpos >= WRITE_HIGH {
            ready!(self.poll_drain(cx))?;
        }
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        self.seal(APPLICATION_DATA, parts)?;
        // Sent now; what the socket does not take goes with the next write
        // or flush.
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.drain(..n);
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.rbuf[this.plain.start..this.plain.start + n]);
                this.plain.start += n;
                if this.plain.is_empty() {
                    this.rbuf.advance(this.opened);
                    this.opened = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let want = record::record_len(&this.rbuf)?;
            if let Some(n) = want.filter(|&n| this.rbuf.len() >= n) {
                this.open_front(n)?;
                if this.wpos < this.wbuf.len() {
                    // A key update answer: sent now if the socket takes it.
                    if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                continue;
            }
            let need = want.unwrap_or(record::HEADER) - this.rbuf.len();
            if this.rbuf.capacity() - this.rbuf.len() < need.max(1024) {
                this.rbuf.reserve(need.max(4096));
            }
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.rbuf
            ))?;
            if n == 0 {
                let why = if this.rbuf.is_empty() {
                    "peer closed connection without sending TLS close_notify"
                } else {
                    "peer closed connection in the middle of a TLS record"
                };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, why)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsConn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(MAX_FRAGMENT);
        self.get_mut().poll_write_parts(cx, &[&buf[..n]], n)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One record of as many slices as fit.
        let mut parts: [&[u8]; 16] = [&[]; 16];
        let (mut k, mut n) = (0, 0);
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            if k == parts.len() || n == MAX_FRAGMENT {
                break;
            }
            let take = b.len().min(MAX_FRAGMENT - n);
            parts[k] = &b[..take];
            k += 1;
            n += take;
        }
        self.get_mut().poll_write_parts(cx, &parts[..k], n)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.sent_close {
            this.seal(ALERT, &[&[1, CLOSE_NOTIFY]])?;
            this.sent_close = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
