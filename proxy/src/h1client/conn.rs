//! An upstream connection of the own client and what can go wrong on it; at
//! the bottom of [`crate::h1client`], below the head parser and the body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

use crate::h1peer::PeerMemo;
use crate::h1repeat::Repeats;
use crate::mtls::stream::MaybeTls;

/// Why an exchange on the own client failed. All of them are the upstream's
/// doing (Envoy's `UC`): the request body was whole before anything was sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection closed before a complete response head")]
    Closed,
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("response head larger than {} bytes", crate::h1scan::MAX_HEAD_BYTES)]
    HeadTooLarge,
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("malformed response body: {0}")]
    Body(&'static str),
    #[error("connection closed before the end of the response body")]
    BodyClosed,
}

/// An upstream HTTP/1.1 connection of the own client, idle or carrying one
/// exchange, with the bytes read from it and not yet used.
pub struct Conn {
    pub(super) io: MaybeTls,
    pub(super) buf: BytesMut,
    /// The long header values of this connection's earlier responses.
    pub(super) repeats: Repeats,
    /// The peer metadata exchanged on this connection.
    pub(super) peer: PeerMemo,
}

/// Gives a connection whose response was read to the end back to its pool.
pub trait Reuse: Send + Sync + Unpin + 'static {
    fn reuse(self, conn: Conn);
}

impl Conn {
    pub fn new(io: MaybeTls) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            repeats: Repeats::default(),
            peer: PeerMemo::default(),
        }
    }

    /// Whether an idle connection can take a request: the server has not
    /// closed it (or sent anything unasked). Costs no system call unless the
    /// socket became readable while idle.
    pub fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let tcp = self.io.tcp();
        if tcp.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        // Readable: a close, bytes nobody asked for, or (TLS) a session
        // ticket, which the TLS layer consumes without yielding data.
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut rb),
            Poll::Pending
        )
    }
}
