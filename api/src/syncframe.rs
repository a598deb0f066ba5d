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

/// Bytes of a frame's length prefix (big-endian `u32`).
pub const PREFIX: usize = 4;

/// A whole frame, prefix and body, whose body `body` writes in place (`room`:
/// its expected size). For a message put together from parts (a delta, once
/// per affected proxy and change): written as it is, with no second copy to
/// put the prefix in front as [`write_frame`] makes.
pub fn build(room: usize, body: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(PREFIX + room);
    out.extend_from_slice(&[0; PREFIX]);
    body(&mut out);
    // Past 4 GiB the prefix saturates and the reader refuses the frame as
    // over `MAX_FRAME`, as it would any frame that large.
    let len = u32::try_from(out.len() - PREFIX).unwrap_or(u32::MAX);
    out[..PREFIX].copy_from_slice(&len.to_be_bytes());
    Bytes::from(out)
}

/// Frames up to this size are written in one piece (prefix and body copied
/// together); larger ones (whole views) without the copy, in two writes.
const ONE_WRITE: usize = 16 * 1024;

/// Writes one frame. A small frame (a delta, an ack, an answer) goes out in
/// one write: on an unbuffered socket the 4-byte prefix alone would cost a
/// second send, and the peer possibly a second wake-up, per message.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    if body.len() <= ONE_WRITE {
        let mut frame = Vec::with_capacity(PREFIX + body.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(body);
        return w.write_all(&frame).await;
    }
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await
}

/// Encodes one message.
pub fn encode<M: Serialize>(m: &M) -> Bytes {
    // Our message types serialize infallibly (string keys, no custom serializers).
    Bytes::from(serde_json::to_vec(m).unwrap_or_default())
}

/// Decodes one message from the agent, as [`decode`] does, without serde's
/// buffering of an internally tagged enum for the large ones.
///
/// `AgentMessage` is tagged by its `type` field, and serde reads such an enum
/// by first copying the whole message into a generic tree, then decoding that:
/// for a view, a second copy of every string and map, about as large as the
/// decoded view itself, and the sidecar's peak heap (its RSS, which glibc does
/// not give back) is set by that moment. So a view or a delta is read in two
/// passes instead: the tag (the rest skipped without allocating), then the
/// variant's fields straight into their types. Other messages are small and go
/// through the derived decoder.
pub fn decode_agent(frame: &[u8]) -> Result<crate::syncapi::AgentMessage, ProtocolError> {
    use crate::syncapi::{AgentMessage, ProxyView};
    use crate::syncdelta::ViewDelta;
    #[derive(serde::Deserialize)]
    struct Tag {
        #[serde(rename = "type")]
        kind: String,
    }
    #[derive(serde::Deserialize)]
    struct View {
        agent: String,
        view: ProxyView,
    }
    #[derive(serde::Deserialize)]
    struct Delta {
        agent: String,
        delta: ViewDelta,
    }
    let err = |source| ProtocolError::Decode {
        len: frame.len(),
        source,
    };
    let fields = |f: fn(&[u8]) -> serde_json::Result<AgentMessage>| {
        crate::sharedstr::interning(|| f(frame)).map_err(err)
    };
    match serde_json::from_slice::<Tag>(frame).map(|t| t.kind) {
        Ok(kind) if kind == "view" => fields(|b| {
            let View { agent, view } = serde_json::from_slice(b)?;
            Ok(AgentMessage::View { agent, view })
        }),
        Ok(kind) if kind == "delta" => fields(|b| {
            let Delta { agent, delta } = serde_json::from_slice(b)?;
            Ok(AgentMessage::Delta { agent, delta })
        }),
        // Other variants, and anything malformed (the derived decoder's
        // error names what is wrong).
        _ => decode(frame),
    }
}

/// Decodes one message from a proxy, as [`decode`] does; an ack (nearly
/// all a proxy sends, one per version pushed to it) without serde's
/// buffering of the internally tagged enum into a generic tree first.
pub fn decode_client(frame: &[u8]) -> Result<crate::syncapi::ClientMessage, ProtocolError> {
    #[derive(serde::Deserialize)]
    struct Ack<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        version: u64,
    }
    match serde_json::from_slice::<Ack>(frame) {
        Ok(a) if a.kind == "ack" => Ok(crate::syncapi::ClientMessage::Ack { version: a.version }),
        // Anything else, and anything malformed (the derived decoder's error
        // names what is wrong).
        _ => decode(frame),
    }
}

/// Decodes one message; a view's repeated short strings are shared
/// ([`crate::sharedstr::interning`]).
pub fn decode<M: DeserializeOwned>(frame: &[u8]) -> Result<M, ProtocolError> {
    crate::sharedstr::interning(|| serde_json::from_slice(frame)).map_err(|source| {
        ProtocolError::Decode {
            len: frame.len(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_decode_as_derived() {
        use crate::syncapi::ClientMessage;
        for m in [
            ClientMessage::Ack {
                version: 1_733_400_000_123,
            },
            ClientMessage::Nack {
                version: 7,
                reason: "bad \"route\"".into(),
            },
            ClientMessage::Lookup {
                target: "10.0.0.1".into(),
            },
            ClientMessage::Forget {
                targets: vec!["a.b.svc.cluster.local".into()],
            },
        ] {
            let frame = encode(&m);
            assert_eq!(decode_client(&frame).unwrap(), m);
        }
        // Field order and spacing do not matter; a wrong tag is not an ack.
        assert_eq!(
            decode_client(br#"{ "version": 5, "type": "ack" }"#).unwrap(),
            ClientMessage::Ack { version: 5 }
        );
        assert!(decode_client(br#"{"type":"acks","version":5}"#).is_err());
        assert!(decode_client(br#"{"type":"ack"}"#).is_err());
    }
    use crate::syncapi::{AgentMessage, Endpoint, ProxyView, Service};
    use crate::syncdelta::ViewDelta;
    use std::sync::Arc;

    fn service() -> Arc<Service> {
        Arc::new(Service {
            hostname: "a.ns.svc.cluster.local".into(),
            endpoints: (0..3)
                .map(|i| Endpoint {
                    address: format!("10.0.0.{i}"),
                    ports: [("http", 8080)].into(),
                    locality: "r/z".into(),
                    ready: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn agent_messages_decode_as_the_derived_decoder_does() {
        let messages = [
            AgentMessage::View {
                agent: "a-1".into(),
                view: ProxyView {
                    version: 7,
                    services: vec![service()],
                    ..Default::default()
                },
            },
            AgentMessage::Delta {
                agent: "a-1".into(),
                delta: ViewDelta {
                    base: 7,
                    version: 8,
                    upsert: vec![service()],
                    remove: vec!["b.ns.svc.cluster.local".into()],
                },
            },
            AgentMessage::Error {
                message: "no".into(),
            },
            AgentMessage::Lookup {
                target: "10.0.0.1:80".into(),
                host: None,
                refused: None,
            },
        ];
        for m in messages {
            let frame = encode(&m);
            assert_eq!(decode_agent(&frame).unwrap(), m);
            assert_eq!(decode::<AgentMessage>(&frame).unwrap(), m);
        }
    }

    #[test]
    fn a_decoded_view_shares_its_repeated_strings_and_the_tag_may_come_last() {
        let frame = br#"{"agent":"a","view":{"version":3,"services":[{"hostname":"h","endpoints":[
            {"address":"10.0.0.1","ports":{"http":80},"locality":"z"},
            {"address":"10.0.0.2","ports":{"http":81},"locality":"z"}]}]},"type":"view"}"#;
        let AgentMessage::View { view, .. } = decode_agent(frame).unwrap() else {
            panic!("not a view")
        };
        let eps = &view.services[0].endpoints;
        assert_eq!(eps[1].ports["http"], 81);
        assert!(Arc::ptr_eq(
            eps[0].locality.as_arc(),
            eps[1].locality.as_arc()
        ));
    }

    #[test]
    fn malformed_agent_messages_name_the_problem() {
        for (frame, want) in [
            (
                &br#"{"type":"view","agent":"a","view":{"version":"x"}}"#[..],
                "invalid type",
            ),
            (br#"{"type":"nope"}"#, "unknown variant `nope`"),
            (br#"{"agent":"a"}"#, "missing field `type`"),
            (br#"{"type":"view""#, "EOF"),
        ] {
            let e = decode_agent(frame).unwrap_err().to_string();
            assert!(e.contains("malformed message") && e.contains(want), "{e}");
        }
    }

    /// Counts the writes a frame takes, and keeps the bytes.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_small_frame_is_one_write_a_large_one_two_and_both_decode() {
        use tokio_util::codec::Decoder;
        for (size, writes) in [
            (0, 1),
            (1800, 1),
            (ONE_WRITE, 1),
            (ONE_WRITE + 1, 2),
            (300_000, 2),
        ] {
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut w = Writes::default();
            write_frame(&mut w, &body).await.unwrap();
            assert_eq!(w.0.len(), writes, "a {size}-byte frame");
            let mut buf = bytes::BytesMut::from(&w.0.concat()[..]);
            let frame = codec().decode(&mut buf).unwrap().expect("one whole frame");
            assert_eq!(&frame[..], &body[..], "a {size}-byte frame");
            assert!(buf.is_empty());
        }
    }
}
