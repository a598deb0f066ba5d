//! Framing of the sync stream (see [`crate::syncapi`]): length-delimited frames
//! holding one JSON message each. Shared by the server and the client library.

use crate::syncapi::MAX_FRAME;
use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A framed sync stream.
pub type Stream<T> = Framed<T, LengthDelimitedCodec>;

/// Why a frame could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed message ({len} bytes): {source}")]
    Decode {
        len: usize,
        source: serde_json::Error,
    },
    #[error("stream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected message: {0}")]
    Unexpected(String),
    #[error("stream closed")]
    Closed,
    #[error("refused by the agent: {0}")]
    Refused(String),
    #[error("{0}")]
    Tls(String),
}

/// The frame codec (4-byte big-endian length prefix, bounded frame size).
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Wraps an I/O stream in the sync framing.
pub fn framed<T: AsyncRead + AsyncWrite>(io: T) -> Stream<T> {
    Framed::new(io, codec())
}

/// Writes one frame without copying `body` into an intermediate buffer.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await
}

/// Encodes one message.
pub fn encode<M: Serialize>(m: &M) -> Bytes {
    // Our message types serialize infallibly (string keys, no custom serializers).
    Bytes::from(serde_json::to_vec(m).unwrap_or_default())
}

/// Decodes one message.
pub fn decode<M: DeserializeOwned>(frame: &[u8]) -> Result<M, ProtocolError> {
    serde_json::from_slice(frame).map_err(|source| ProtocolError::Decode {
        len: frame.len(),
        source,
    })
}
