//! The own HTTP/1.1 server against scripted connections: what it answers,
//! byte for byte where framing is concerned, and which requests it leaves to
//! hyper with the buffer untouched.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{serve, Ended, Error};
use crate::body::Body;

/// A connection whose client sends `input` (one read per chunk), then closes
/// (`eof`) or goes quiet; what the server writes is kept, with the number of
/// writes.
struct Script {
    input: VecDeque<Bytes>,
    eof: bool,
    output: Vec<u8>,
    writes: usize,
    shut: bool,
}

impl Script {
    fn new(chunks: &[&[u8]], eof: bool) -> Script {
        Script {
            input: chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect(),
            eof,
            output: Vec::new(),
            writes: 0,
            shut: false,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.input.pop_front() {
            Some(mut c) => {
                let n = c.len().min(buf.remaining());
                buf.put_slice(&c.split_to(n));
                if !c.is_empty() {
                    self.input.push_front(c);
                }
                Poll::Ready(Ok(()))
            }
            None if self.eof => Poll::Ready(Ok(())),
            None => Poll::Pending,
        }
    }
}

impl AsyncWrite for Script {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(b);
        self.writes += 1;
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut = true;
        Poll::Ready(Ok(()))
    }
}

/// What the handler saw of one request.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    target: String,
    host: Option<String>,
    body: Bytes,
}

type Seens = Arc<Mutex<Vec<Seen>>>;

/// Serves `io` with a handler that notes each request and answers with
/// `answer(the request's target)`.
async fn run(
    io: &mut Script,
    buf: &mut BytesMut,
    shutdown: &AtomicBool,
    answer: fn(&str) -> Response<Body>,
) -> (Result<Ended, Error>, Vec<Seen>) {
    let seen: Seens = Arc::default();
    let s = seen.clone();
    let r = serve(
        io,
        buf,
        shutdown,
        &mut Default::default(),
        move |req: Request<Body>| {
            let s = s.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let target = parts.uri.to_string();
                s.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    target: target.clone(),
                    host: parts
                        .headers
                        .get("host")
                        .map(|h| h.to_str().unwrap().to_string()),
                    body,
                });
                answer(&target)
            }
        },
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    (r, seen)
}

fn ok(_: &str) -> Response<Body> {
    crate::util::full(StatusCode::OK, "hello\n")
}

/// A response whose body size is not known up front: two frames, then the end.
fn streamed(_: &str) -> Response<Body> {
    let frames = futures::stream::iter([
        Ok::<_, crate::body::BodyError>(hyper::body::Frame::data(Bytes::from_static(b"abc"))),
        Ok(hyper::body::Frame::data(Bytes::from_static(b"defgh"))),
    ]);
    Response::new(http_body_util::StreamBody::new(frames).boxed())
}

/// The head of the `n`th response in `out` with its date line removed (the
/// date changes), and its body.
fn responses(out: &str) -> Vec<String> {
    out.split("HTTP/1.1 ")
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.lines()
                .filter(|l| !l.starts_with("date: "))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[tokio::test]
async fn keep_alive_pipelined_requests_answered_in_order_with_lengths_and_a_date() {
    let mut io = Script::new(
        &[b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: y\r\n\r\n"],
        true,
    );
    let mut buf = BytesMut::new();
    let (r, seen) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
    assert_eq!(r.unwrap(), Ended::Closed);
    assert_eq!(
        seen.iter()
            .map(|s| (s.target.as_str(), s.host.as_deref()))
            .collect::<Vec<_>>(),
        [("/a", Some("x")), ("/b", Some("y"))]
    );
    let text = io.text();
    assert_eq!(text.matches("\r\ndate: ").count(), 2, "{text}");
    assert_eq!(
        responses(&text),
        [
            "200 OK|content-type: text/plain|content-length: 6||hello",
            "200 OK|content-type: text/plain|content-length: 6||hello"
        ]
    );
    // Each response, head and body, in one write; the client closed between
    // requests, so the server did not close first.
    assert_eq!(io.writes, 2);
    assert!(!io.shut);
}

#[tokio::test]
async fn long_values_that_repeat_on_a_connection_arrive_as_sent() {
    // Values this long are kept per connection (h1repeat): a repeat is
    // shared, a change is not mistaken for the kept value.
    let (a, b) = ("a".repeat(70), "b".repeat(70));
    let input = format!(
        "GET /1 HTTP/1.1\r\nHost: {a}\r\n\r\nGET /2 HTTP/1.1\r\nhost: {a}\r\n\r\n\
         GET /3 HTTP/1.1\r\nHost: {b}\r\n\r\nGET /4 HTTP/1.1\r\nHost: {a}x\r\n\r\n"
    );
    let mut io = Script::new(&[input.as_bytes()], true);
    let mut buf = BytesMut::new();
    let (r, seen) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
    assert_eq!(r.unwrap(), Ended::Closed);
    let hosts: Vec<String> = seen.iter().map(|s| s.host.clone().unwrap()).collect();
    assert_eq!(hosts, [a.clone(), a.clone(), b, format!("{a}x")]);
}

#[tokio::test]
async fn a_body_arriving_in_pieces_is_handed_over_whole() {
    let mut io = Script::new(
        &[
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhel",
            b"lo ",
            b"world",
        ],
        true,
    );
    let mut buf = BytesMut::new();
    let (r, seen) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
    assert_eq!(r.unwrap(), Ended::Closed);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, Bytes::from_static(b"hello world"));
}

#[tokio::test]
async fn unknown_length_is_chunked_and_head_gets_no_body() {
    let mut io = Script::new(
        &[b"GET /s HTTP/1.1\r\n\r\nHEAD /h HTTP/1.1\r\n\r\nGET /e HTTP/1.1\r\n\r\n"],
        true,
    );
    let mut buf = BytesMut::new();
    let answer: fn(&str) -> Response<Body> = |t| match t {
        "/s" => streamed(t),
        "/h" => ok(t),
        _ => {
            let mut r = Response::new(crate::body::Body::default());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
    };
    let (r, _) = run(&mut io, &mut buf, &AtomicBool::new(false), answer).await;
    assert_eq!(r.unwrap(), Ended::Closed);
    assert_eq!(
        responses(&io.text()),
        [
            "200 OK|transfer-encoding: chunked||3|abc|5|defgh|0|",
            "200 OK|content-type: text/plain|content-length: 6|",
            "204 No Content|",
        ]
    );
}

#[tokio::test]
async fn connection_close_is_answered_then_the_connection_ends() {
    let mut io = Script::new(
        &[b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n"],
        false,
    );
    let mut buf = BytesMut::new();
    let (r, seen) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
    assert_eq!(r.unwrap(), Ended::Closed);
    assert_eq!(seen.len(), 1);
    assert!(
        io.text().contains("\r\nconnection: close\r\n"),
        "{}",
        io.text()
    );
    assert!(io.shut);
}

#[tokio::test]
async fn a_drain_ends_an_idle_connection_and_closes_after_the_current_response() {
    // Asked while a request is being served: it is answered with
    // `connection: close`, and the request behind it is not read.
    let mut io = Script::new(&[b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"], false);
    let mut buf = BytesMut::new();
    let shutdown = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let r = serve(
        &mut io,
        &mut buf,
        &shutdown,
        &mut Default::default(),
        |_req: Request<Body>| {
            served.fetch_add(1, Ordering::Relaxed);
            shutdown.store(true, Ordering::Relaxed);
            std::future::ready(ok(""))
        },
    )
    .await;
    assert_eq!(r.unwrap(), Ended::Closed);
    assert_eq!(served.load(Ordering::Relaxed), 1);
    assert!(io.text().contains("\r\nconnection: close\r\n"));
    assert!(io.shut);
    // Asked between requests: closed without reading more.
    let mut io = Script::new(&[b"GET /c HTTP/1.1\r\n\r\n"], false);
    let (r, seen) = run(&mut io, &mut BytesMut::new(), &AtomicBool::new(true), ok).await;
    assert_eq!(r.unwrap(), Ended::Closed);
    assert!(seen.is_empty() && io.output.is_empty());
    assert_eq!(io.input.len(), 1);
}

#[tokio::test]
async fn requests_for_hyper_are_left_in_the_buffer_unanswered() {
    let cases: [&[u8]; 11] = [
        b"GET / HTTP/1.0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        // Not `1*DIGIT` (Rust's parser would read `+5` as 5): hyper's 400.
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello",
    ];
    for case in cases {
        let mut io = Script::new(&[case], false);
        let mut buf = BytesMut::new();
        let (r, seen) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
        let shown = String::from_utf8_lossy(case);
        assert_eq!(r.unwrap(), Ended::HandOff, "{shown}");
        assert!(seen.is_empty() && io.output.is_empty(), "{shown}");
        assert_eq!(&buf[..], case, "{shown}");
    }
    // After requests this server served: those are answered, the rest stays.
    let mut io = Script::new(
        &[b"GET /a HTTP/1.1\r\n\r\nGET /ws HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"],
        false,
    );
    let mut buf = BytesMut::new();
    let (r, seen) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
    assert_eq!(r.unwrap(), Ended::HandOff);
    assert_eq!(seen.len(), 1);
    assert_eq!(&buf[..], b"GET /ws HTTP/1.1\r\nUpgrade: h2c\r\n\r\n");
    assert_eq!(responses(&io.text()).len(), 1);
}

#[tokio::test]
async fn a_target_the_uri_type_refuses_gets_400_and_the_connection_ends() {
    let mut io = Script::new(&[b"GET http:// HTTP/1.1\r\n\r\n"], false);
    let mut buf = BytesMut::new();
    let (r, seen) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
    assert_eq!(r.unwrap(), Ended::Closed);
    assert!(seen.is_empty());
    let text = io.text();
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\ninvalid request target\n"), "{text}");
    assert!(io.shut);
}

#[tokio::test(start_paused = true)]
async fn a_head_that_stops_coming_times_out_and_a_cut_one_is_truncated() {
    let mut io = Script::new(&[b"GET / HTTP/1.1\r\nHost: "], false);
    let mut buf = BytesMut::new();
    let (r, _) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
    assert!(matches!(r, Err(Error::HeadTimeout(_))), "{r:?}");
    let mut io = Script::new(&[b"GET / HTTP/1.1\r\nHost: "], true);
    let mut buf = BytesMut::new();
    let (r, _) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
    assert!(matches!(r, Err(Error::Truncated(22))), "{r:?}");
    let mut io = Script::new(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"], true);
    let mut buf = BytesMut::new();
    let (r, seen) = run(&mut io, &mut buf, &AtomicBool::new(false), ok).await;
    assert!(matches!(r, Err(Error::Truncated(_))), "{r:?}");
    assert!(seen.is_empty());
}

#[tokio::test]
async fn a_body_that_contradicts_its_length_ends_the_connection() {
    let short: fn(&str) -> Response<Body> = |_| {
        let mut r = crate::util::full(StatusCode::OK, "abc");
        r.headers_mut()
            .insert("content-length", "10".parse().unwrap());
        r
    };
    let mut io = Script::new(&[b"GET / HTTP/1.1\r\n\r\n"], true);
    let (r, _) = run(
        &mut io,
        &mut BytesMut::new(),
        &AtomicBool::new(false),
        short,
    )
    .await;
    assert!(matches!(r, Err(Error::Short(7))), "{r:?}");
    let long: fn(&str) -> Response<Body> = |_| {
        let mut r = crate::util::full(StatusCode::OK, "abcdef");
        r.headers_mut()
            .insert("content-length", "2".parse().unwrap());
        r
    };
    let mut io = Script::new(&[b"GET / HTTP/1.1\r\n\r\n"], true);
    let (r, _) = run(&mut io, &mut BytesMut::new(), &AtomicBool::new(false), long).await;
    assert!(matches!(r, Err(Error::Long)), "{r:?}");
}

/// Serves `input` with a handler that answers every request with the peer
/// metadata `workload=s`; returns the peer metadata each request arrived
/// with, and what was written.
async fn exchange_metadata(input: &[&[u8]]) -> (Vec<Option<String>>, String) {
    let mut io = Script::new(input, true);
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let r = serve(
        &mut io,
        &mut BytesMut::new(),
        &AtomicBool::new(false),
        &mut Default::default(),
        |req: Request<Body>| {
            let v = req.headers().get(crate::peer::HEADER);
            seen.lock()
                .unwrap()
                .push(v.map(|v| v.to_str().unwrap().to_string()));
            let mut r = ok("");
            r.headers_mut().insert(
                crate::peer::HEADER,
                http::HeaderValue::from_static("workload=s"),
            );
            std::future::ready(r)
        },
    )
    .await;
    assert_eq!(r.unwrap(), Ended::Closed);
    let seen = seen.lock().unwrap().clone();
    (seen, io.text())
}

#[tokio::test]
async fn peer_metadata_crosses_once_each_way_with_a_client_that_keeps_it() {
    let (seen, out) = exchange_metadata(&[
        b"GET /1 HTTP/1.1\r\nx-mesh-peer-metadata: workload=c;kept=1\r\n\r\n",
        b"GET /2 HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET /3 HTTP/1.1\r\nx-mesh-peer-metadata: workload=c2\r\n\r\n",
        b"GET /4 HTTP/1.1\r\n\r\n",
    ])
    .await;
    let c = |s: &str| Some(s.to_string());
    // The handler sees every request's metadata, the marker taken off.
    assert_eq!(
        seen,
        [
            c("workload=c"),
            c("workload=c"),
            c("workload=c2"),
            c("workload=c2")
        ]
    );
    // The answers carry it once, told; the client keeps it from then on.
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 4);
    assert_eq!(out.matches("x-mesh-peer-metadata").count(), 1, "{out}");
    assert!(out.contains("\r\nx-mesh-peer-metadata: workload=s;kept=1\r\n"));
}

#[tokio::test]
async fn a_client_that_does_not_keep_peer_metadata_gets_it_on_every_answer() {
    let one = b"GET / HTTP/1.1\r\nx-mesh-peer-metadata: workload=c\r\n\r\n";
    let (seen, out) = exchange_metadata(&[one, one, one]).await;
    assert_eq!(seen, vec![Some("workload=c".to_string()); 3]);
    assert_eq!(out.matches("x-mesh-peer-metadata: workload=s").count(), 3);
    assert_eq!(out.matches(";kept=1").count(), 1);
    // A client that never sent any (an app) has none put back.
    let bare: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
    let (seen, out) = exchange_metadata(&[bare, bare]).await;
    assert_eq!(seen, [None, None]);
    assert_eq!(out.matches("x-mesh-peer-metadata").count(), 2);
    assert_eq!(out.matches(";kept=1").count(), 1);
}
