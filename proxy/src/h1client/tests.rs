//! The own client: encoding and parsing as plain functions, then exchanges
//! with loopback servers in this process (scripted raw ones for framing and
//! closes, hyper's for reuse through the pool).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::body::{next_chunk, Step};
use super::head::{self, Framing};
use super::*;
use crate::body::Body;
use crate::h1scan::Chunk;
use crate::mtls::certs::TlsState;
use crate::mtls::stream::MaybeTls;
use crate::pool::{Dial, Pool};

fn full(b: &'static [u8]) -> Body {
    Full::new(Bytes::from_static(b))
        .map_err(|n| match n {})
        .boxed()
}

fn get(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header("host", "reviews:9080")
        .header("x-request-id", "abc")
        .body(crate::util::empty())
        .unwrap()
}

#[test]
fn a_bodiless_request_is_written_as_hyper_writes_it() {
    let out = outgoing(get("/reviews/0?x=1")).ok().unwrap();
    assert_eq!(
        String::from_utf8(out.bytes).unwrap(),
        "GET /reviews/0?x=1 HTTP/1.1\r\nhost: reviews:9080\r\nx-request-id: abc\r\n\r\n"
    );
    assert!(!out.head);
}

#[test]
fn a_whole_body_gets_its_length_and_follows_the_head() {
    let req = Request::post("/p").body(full(b"hello")).unwrap();
    let out = outgoing(req).ok().unwrap();
    assert_eq!(
        String::from_utf8(out.bytes).unwrap(),
        "POST /p HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
    );
    // A matching length is kept, the hop-by-hop coding is not written.
    let req = Request::post("/p")
        .header("content-length", "5")
        .header("transfer-encoding", "chunked")
        .body(full(b"hello"))
        .unwrap();
    let out = outgoing(req).ok().unwrap();
    assert_eq!(
        String::from_utf8(out.bytes).unwrap(),
        "POST /p HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
    );
}

#[tokio::test]
async fn what_the_own_client_does_not_take_goes_back_intact() {
    // A length that contradicts the body: hyper's client decides.
    let req = Request::post("/p")
        .header("content-length", "9")
        .body(full(b"hello"))
        .unwrap();
    let back = outgoing(req).err().unwrap();
    let body = back.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    // A length that is not `1*DIGIT`: hyper's client refuses it.
    let req = Request::post("/p")
        .header("content-length", "+5")
        .body(full(b"hello"))
        .unwrap();
    assert!(outgoing(req).is_err(), "+5 is not a content-length");
    // An upgrade, CONNECT, HTTP/1.0.
    let up = Request::get("/ws").header("upgrade", "websocket");
    assert!(outgoing(up.body(crate::util::empty()).unwrap()).is_err());
    let connect = Request::builder().method(Method::CONNECT).uri("a:443");
    assert!(outgoing(connect.body(crate::util::empty()).unwrap()).is_err());
    let old = Request::get("/").version(Version::HTTP_10);
    assert!(outgoing(old.body(crate::util::empty()).unwrap()).is_err());
    // A streamed body not all there yet: nothing taken from it.
    assert_eq!(&streamed_through_outgoing(&[], &[b"ab"]).await[..], b"ab");
    // One frame there and more to come: the first is put back in front.
    assert_eq!(
        &streamed_through_outgoing(&[b"one"], &[b"two"]).await[..],
        b"onetwo"
    );
}

/// A streamed request body with `before` sent when `outgoing` sees it and
/// `after` sent once it gave the request back: the body hyper's client gets.
async fn streamed_through_outgoing(before: &[&'static [u8]], after: &[&'static [u8]]) -> Bytes {
    let (mut tx, rx) = futures::channel::mpsc::channel(8);
    let mut send = |chunk: &'static [u8]| {
        tx.try_send(Ok(hyper::body::Frame::data(Bytes::from_static(chunk))))
            .unwrap()
    };
    before.iter().for_each(|c| send(c));
    let streamed: Body = http_body_util::StreamBody::new(rx).boxed();
    let back = outgoing(Request::post("/s").body(streamed).unwrap())
        .err()
        .unwrap();
    after.iter().for_each(|c| send(c));
    drop(tx);
    back.into_body().collect().await.unwrap().to_bytes()
}

fn parse(bytes: &[u8], head_request: bool) -> Result<Option<head::Head>, Error> {
    head::take(
        &mut BytesMut::from(bytes),
        head_request,
        &mut Default::default(),
        &mut Default::default(),
    )
}

fn framing_of(bytes: &str) -> (Framing, bool) {
    let h = parse(bytes.as_bytes(), false).unwrap().unwrap();
    (h.framing, h.keep_alive)
}

#[test]
fn long_values_repeated_by_a_connection_arrive_as_sent() {
    let (a, b) = ("a".repeat(70), "b".repeat(70));
    let mut buf = BytesMut::from(
        format!(
            "HTTP/1.1 200 OK\r\nx-mesh-peer-metadata: {a}\r\ncontent-length: 0\r\n\r\n\
             HTTP/1.1 200 OK\r\nX-Mesh-Peer-Metadata: {a}\r\ncontent-length: 0\r\n\r\n\
             HTTP/1.1 200 OK\r\nx-mesh-peer-metadata: {b}\r\ncontent-length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    let mut repeats = Default::default();
    let mut seen = Vec::new();
    while let Some(h) = head::take(&mut buf, false, &mut repeats, &mut Default::default()).unwrap()
    {
        seen.push(h.response.headers()["x-mesh-peer-metadata"].clone());
    }
    assert_eq!(seen, [a.as_str(), a.as_str(), b.as_str()]);
}

#[test]
fn response_heads_and_their_framing() {
    assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-le", false)
        .unwrap()
        .is_none());
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\n\r\nokNEXT"[..],
    );
    let h = head::take(
        &mut buf,
        false,
        &mut Default::default(),
        &mut Default::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.response.status(), StatusCode::OK);
    assert_eq!(h.response.headers()["server"], "x");
    assert_eq!((h.framing, h.keep_alive), (Framing::Length(2), true));
    assert_eq!(&buf[..], b"okNEXT", "the head, and only it, is taken");

    let cases = [
        ("HTTP/1.1 204 No Content\r\n\r\n", (Framing::Empty, true)),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            (Framing::Empty, true),
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            (Framing::Chunked, true),
        ),
        // Both: chunked wins and the connection is not reused.
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            (Framing::Chunked, false),
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            (Framing::Close, false),
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", (Framing::Close, false)),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\n",
            (Framing::Length(4), false),
        ),
        (
            "HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\n",
            (Framing::Length(4), false),
        ),
        (
            "HTTP/1.0 200 OK\r\ncontent-length: 4\r\nconnection: Keep-Alive\r\n\r\n",
            (Framing::Length(4), true),
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 4\r\n\r\n",
            (Framing::Length(4), true),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(framing_of(text), want, "{text}");
    }
    let h = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(h.framing, Framing::Empty, "a HEAD response has no body");
}

#[test]
fn bad_response_heads_are_named() {
    let bad: [(&[u8], &str); 5] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\n",
            "invalid response: content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: +4\r\n\r\n",
            "invalid response: content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "invalid response: content-length",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "invalid response: 101 to a request that asked for no upgrade",
        ),
        (
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            "malformed response head: invalid response status",
        ),
    ];
    for (bytes, want) in bad {
        let e = parse(bytes, false).err().unwrap();
        assert_eq!(e.to_string(), want);
    }
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'a', crate::h1scan::MAX_HEAD_BYTES));
    assert!(matches!(parse(&huge, false), Err(Error::HeadTooLarge)));
}

#[test]
fn chunked_bodies_decode_across_reads() {
    let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n";
    // Fed one byte at a time, as the worst network would.
    let mut state = Chunk::Start;
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut trailers = None;
    for b in wire {
        buf.extend_from_slice(&[*b]);
        loop {
            match next_chunk(&mut state, &mut buf).unwrap() {
                Step::More => break,
                Step::Data(d) => data.extend_from_slice(&d),
                Step::End(t) => {
                    trailers = Some(t);
                    break;
                }
            }
        }
    }
    assert_eq!(data, b"hello world");
    let t = trailers.expect("ended").expect("trailers");
    assert_eq!(t["grpc-status"], "0");
    assert!(buf.is_empty());
    for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"11111111111111111\r\n"] {
        let mut state = Chunk::Start;
        let mut buf = BytesMut::from(bad);
        let mut r = next_chunk(&mut state, &mut buf);
        while let Ok(Step::Data(_)) = r {
            r = next_chunk(&mut state, &mut buf);
        }
        assert!(r.is_err(), "{bad:?}");
    }
}

/// A reuse that counts check-ins.
struct Count(Arc<AtomicUsize>);
impl Reuse for Count {
    fn reuse(self, _conn: Conn) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A raw upstream: reads one request head, writes `answer`, then closes.
async fn scripted(answer: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        // In two writes, so the head and body arrive apart at times.
        let cut = answer.len() / 2;
        s.write_all(&answer[..cut]).await.unwrap();
        s.flush().await.unwrap();
        tokio::task::yield_now().await;
        s.write_all(&answer[cut..]).await.unwrap();
    });
    addr
}

async fn exchange(answer: &'static [u8]) -> (Result<(StatusCode, Bytes), String>, usize) {
    let addr = scripted(answer).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let conn = Conn::new(MaybeTls::Plain(tcp));
    let reused = Arc::new(AtomicUsize::new(0));
    let out = outgoing(get("/")).ok().unwrap();
    let r = match conn.send(out, Count(reused.clone())).await {
        Ok(resp) => {
            let status = resp.status();
            resp.into_body()
                .collect()
                .await
                .map(|c| (status, c.to_bytes()))
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    (r, reused.load(Ordering::SeqCst))
}

#[tokio::test]
async fn exchanges_with_each_framing() {
    let (r, reused) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world").await;
    assert_eq!(
        r.unwrap(),
        (StatusCode::OK, Bytes::from_static(b"hello world"))
    );
    assert_eq!(reused, 1, "a complete response frees its connection");

    let (r, reused) =
        exchange(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .await;
    assert_eq!(r.unwrap().1, Bytes::from_static(b"hello"));
    assert_eq!(reused, 1);

    let (r, reused) = exchange(b"HTTP/1.1 404 Not Found\r\n\r\nuntil the close").await;
    assert_eq!(
        r.unwrap(),
        (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"until the close")
        )
    );
    assert_eq!(reused, 0, "a close-delimited body uses its connection up");

    let (r, reused) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello").await;
    assert_eq!(
        r.unwrap_err(),
        "connection closed before the end of the response body"
    );
    assert_eq!(reused, 0);

    let (r, _) = exchange(b"HTTP/1.1 200 OK\r\ncont").await;
    assert_eq!(
        r.unwrap_err(),
        "connection closed before a complete response head"
    );

    let (r, reused) =
        exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n").await;
    assert_eq!(r.unwrap().1, Bytes::from_static(b"ok"));
    assert_eq!(
        reused, 0,
        "bytes after the response: the connection is not reused"
    );
}

/// A hyper upstream that counts connections and requests; it closes a
/// connection after `per_conn` requests (0: never).
async fn counting(per_conn: usize) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let reqs = Arc::new(AtomicUsize::new(0));
    let (c, r) = (conns.clone(), reqs.clone());
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            let served = Arc::new(AtomicUsize::new(0));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    r.fetch_add(1, Ordering::SeqCst);
                    let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut resp = http::Response::new(Full::new(body));
                        if per_conn > 0 && n >= per_conn {
                            resp.headers_mut()
                                .insert("connection", http::HeaderValue::from_static("close"));
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, conns, reqs)
}

async fn send_through(pool: &Pool, addr: SocketAddr, body: &'static [u8]) -> Bytes {
    let req = Request::post("/echo").body(full(body)).unwrap();
    let (resp, checkin) = pool.send_h1(addr, req).await.unwrap();
    assert!(
        checkin.is_none(),
        "the own client checks its connection in itself"
    );
    resp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn the_pool_reuses_own_connections_until_the_server_says_close() {
    let pool = Pool::new(Dial::Direct, Arc::new(TlsState::default()));
    let (addr, conns, reqs) = counting(3).await;
    for i in 0..7 {
        let body: &'static [u8] = if i % 2 == 0 { b"even" } else { b"" };
        assert_eq!(&send_through(&pool, addr, body).await[..], body);
    }
    assert_eq!(reqs.load(Ordering::SeqCst), 7);
    // Three requests per connection, then `Connection: close`.
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_the_server_closed_are_skipped_and_swept() {
    let pool = Pool::new(Dial::Direct, Arc::new(TlsState::default()));
    // The server answers and closes without saying so (as a keep-alive
    // timeout does): the pooled connection must be found dead, not failed on.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            drop(s);
            closed_tx.send(()).await.unwrap();
        }
    });
    let wait = std::time::Duration::from_secs(5);
    let tick = std::time::Duration::from_millis(5);

    // Taken out at the next request: skipped, and a new connection made.
    assert_eq!(&send_through(&pool, addr, b"").await[..], b"ok");
    closed_rx.recv().await.unwrap();
    tokio::time::timeout(wait, async {
        while pool.own_idle_usable(addr) != Some(false) {
            tokio::time::sleep(tick).await;
        }
    })
    .await
    .expect("the pooled connection sees the close");
    assert_eq!(&send_through(&pool, addr, b"").await[..], b"ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // Left idle: the sweep closes it.
    closed_rx.recv().await.unwrap();
    assert_eq!(pool.own_idle(addr), 1);
    tokio::time::timeout(wait, async {
        while pool.sweep_own_idle() == 0 {
            tokio::time::sleep(tick).await;
        }
    })
    .await
    .expect("the sweep drops the closed connection");
    assert_eq!(pool.own_idle(addr), 0);
}

/// A server connection that keeps a copy of every byte read and written.
struct Recorded {
    io: tokio::net::TcpStream,
    wire: Arc<std::sync::Mutex<(Vec<u8>, Vec<u8>)>>,
}

impl tokio::io::AsyncRead for Recorded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        self.wire.lock().unwrap().0.extend_from_slice(read);
        r
    }
}

impl tokio::io::AsyncWrite for Recorded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        b: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, b);
        if let std::task::Poll::Ready(Ok(n)) = r {
            self.wire.lock().unwrap().1.extend_from_slice(&b[..n]);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Hands a connection whose response ended back to the test.
struct Handback(tokio::sync::mpsc::UnboundedSender<Conn>);

impl Reuse for Handback {
    fn reuse(self, conn: Conn) {
        let _ = self.0.send(conn);
    }
}

#[tokio::test]
async fn the_own_client_and_server_exchange_peer_metadata_once_per_connection() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let wire = Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
    let w = wire.clone();
    // The own server, answering with its metadata and, in `x-seen`, the
    // caller's metadata as its handler got it.
    tokio::spawn(async move {
        let (io, _) = l.accept().await.unwrap();
        let mut io = Recorded { io, wire: w };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut memo = crate::h1server::PeerMemo::default();
        let _ = crate::h1server::serve(
            &mut io,
            &mut BytesMut::new(),
            &stop,
            &mut memo,
            |req: Request<Body>| {
                let seen = req.headers().get(crate::peer::HEADER).cloned();
                let mut r = crate::util::full(StatusCode::OK, "hi");
                let h = r.headers_mut();
                h.insert(crate::peer::HEADER, "workload=server".parse().unwrap());
                if let Some(v) = seen {
                    h.insert("x-seen", v);
                }
                std::future::ready(r)
            },
        )
        .await;
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut conn = Conn::new(MaybeTls::Plain(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
    ));
    for i in 0..4 {
        let mut req = get("/");
        // The caller's metadata changes once, before the third request.
        let me = if i < 2 {
            "workload=client"
        } else {
            "workload=client2"
        };
        req.headers_mut()
            .insert(crate::peer::HEADER, me.parse().unwrap());
        let resp = conn.send(outgoing(req).ok().unwrap(), Handback(tx.clone()));
        let resp = resp.await.unwrap();
        let h = resp.headers();
        assert_eq!(h[crate::peer::HEADER], "workload=server", "answer {i}");
        assert_eq!(h["x-seen"], me, "request {i}");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "hi");
        conn = rx.recv().await.unwrap();
    }
    let (requests, answers) = wire.lock().unwrap().clone();
    let (requests, answers) = (
        String::from_utf8(requests).unwrap(),
        String::from_utf8(answers).unwrap(),
    );
    // Each side's first value went told; the client's new value once more.
    let lines = |s: &str| s.lines().filter(|l| l.starts_with("x-mesh-peer")).count();
    assert_eq!(lines(&requests), 2, "{requests}");
    assert!(requests.contains("x-mesh-peer-metadata: workload=client;kept=1\r\n"));
    assert!(requests.contains("x-mesh-peer-metadata: workload=client2\r\n"));
    assert_eq!(lines(&answers), 1, "{answers}");
    assert!(answers.contains("x-mesh-peer-metadata: workload=server;kept=1\r\n"));
}
