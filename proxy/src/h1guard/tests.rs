//! What hyper reads through the guard: good requests unchanged in any pieces,
//! bad heads replaced by the local request, bodies stepped in place; local replies.

use super::*;
use tokio::io::AsyncWriteExt;

/// Everything hyper could read through the guard right now (polled until
/// it would wait; the client keeps the connection open).
fn read_now<S: AsyncRead + Unpin>(g: &mut Guarded<S>) -> Vec<u8> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..10_000 {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *g).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if !rb.filled().is_empty() => got.extend_from_slice(rb.filled()),
            _ => break,
        }
    }
    got
}

type Client = tokio::io::WriteHalf<tokio::io::DuplexStream>;
type Reader = tokio::io::ReadHalf<tokio::io::DuplexStream>;

/// A guarded server end and the client's writing end (its reading end
/// kept so the connection stays open).
fn pipe() -> (Guarded<tokio::io::DuplexStream>, Client, Reader) {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let (r, w) = tokio::io::split(client);
    (Guarded::new(server), w, r)
}

/// What hyper reads when the client sends `pieces` (each arriving on its own).
async fn through(pieces: &[&[u8]]) -> Vec<u8> {
    let (mut g, mut w, _keep) = pipe();
    let mut got = Vec::new();
    for p in pieces {
        w.write_all(p).await.unwrap();
        got.extend(read_now(&mut g));
    }
    got
}

fn local(why: Reject) -> Vec<u8> {
    format!(
        "{REJECT_METHOD} /{} HTTP/1.1\r\nhost: mesh-proxy\r\nconnection: close\r\n\r\n",
        why.token()
    )
    .into_bytes()
}

#[tokio::test]
async fn good_requests_pass_unchanged_in_any_pieces() {
    let two = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
    assert_eq!(through(&[two]).await, two.to_vec());
    let bytes: Vec<&[u8]> = two.chunks(1).collect();
    assert_eq!(through(&bytes).await, two.to_vec());
    let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00\n\n";
    assert_eq!(through(&[h2]).await, h2.to_vec());
}

#[tokio::test]
async fn a_bad_request_is_replaced_from_its_first_byte() {
    let good = b"GET /ok HTTP/1.1\r\n\r\n".to_vec();
    let mut want = good.clone();
    want.extend(local(Reject::BareLf));
    assert_eq!(
        through(&[&good, b"GET /bad HTTP/1.1\nHost: a\r\n\r\n"]).await,
        want
    );
    // Split across reads: the partial head was held back, not forwarded.
    assert_eq!(
        through(&[b"GET /bad HTTP/1.1\r\nHo", b"st: a\n\r\n"]).await,
        local(Reject::BareLf)
    );
    let chunked = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /smuggled HTTP/1.1\r\n\r\n";
    assert_eq!(through(&[chunked]).await, local(Reject::BadChunk));
    let long = format!(
        "GET /{} HTTP/1.1\r\n",
        "a".repeat(h1scan::MAX_URI_BYTES + 10)
    );
    assert_eq!(
        through(&[long.as_bytes()]).await,
        local(Reject::UriTooLong),
        "refused before the head is complete"
    );
}

#[tokio::test]
async fn a_bad_chunk_after_the_head_went_through_is_left_to_hyper() {
    let head = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (mut g, mut w, _keep) = pipe();
    w.write_all(head).await.unwrap();
    assert_eq!(read_now(&mut g), head.to_vec());
    w.write_all(b"zz\r\n").await.unwrap();
    assert_eq!(read_now(&mut g), b"zz\r\n".to_vec());
}

#[tokio::test]
async fn bodies_after_a_released_head_are_stepped_in_place() {
    let (mut g, mut w, _keep) = pipe();
    let head = b"POST /a HTTP/1.1\r\nContent-Length: 4\r\n\r\n";
    w.write_all(head).await.unwrap();
    assert_eq!(read_now(&mut g), head.to_vec());
    // The body's end and a bad next head in one read: the body goes
    // through, the next request is replaced.
    w.write_all(b"abcdGET /b HTTP/1.1\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut want = b"abcd".to_vec();
    want.extend(local(Reject::BareLf));
    assert_eq!(read_now(&mut g), want);
    let (mut g, mut w, _keep) = pipe();
    let head = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    w.write_all(head).await.unwrap();
    assert_eq!(read_now(&mut g), head.to_vec());
    let rest = b"2\r\nab\r\n0\r\n\r\nGET /ok HTTP/1.1\r\n\r\n";
    w.write_all(rest).await.unwrap();
    assert_eq!(read_now(&mut g), rest.to_vec());
}

#[tokio::test]
async fn oversized_heads_go_to_hyper_for_its_431() {
    let big = format!(
        "GET / HTTP/1.1\r\nx-big: {}",
        "a".repeat(h1scan::MAX_HEAD_BYTES + 10)
    );
    assert_eq!(through(&[big.as_bytes()]).await, big.into_bytes());
}

#[test]
fn local_replies_name_the_refusal() {
    let r = local_reply("/uri-too-long");
    assert_eq!(r.status(), 414);
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(local_reply("/invalid-chunk").status(), 400);
    assert_eq!(local_reply("/bare-lf").status(), 400);
}
