//! Unit tests of the session's buffer handling.

use super::*;
use futures_util::{SinkExt, StreamExt};

#[tokio::test]
async fn a_large_frame_does_not_keep_its_read_buffer_a_small_one_does() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (mut tx, mut rx) = (crate::syncframe::framed(a), crate::syncframe::framed(b));
    for (len, kept) in [(200 * 1024, false), (1024, true)] {
        tx.send(bytes::Bytes::from(vec![b'x'; len])).await.unwrap();
        let frame = rx.next().await.unwrap().unwrap();
        assert_eq!(frame.len(), len);
        release_large_frame(&mut rx, frame);
        assert_eq!(
            rx.read_buffer().capacity() > 0,
            kept,
            "frame of {len} bytes"
        );
    }
}
