//! The send path against real loopback upstreams (hyper servers in this
//! process) on paused time: which endpoint a retry goes to, what a per-try or
//! overall timeout answers, what is never retried.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use super::*;
use crate::lb::LbPolicy;
use crate::mtls::certs::TlsState;
use crate::mtls::UpstreamTls;
use crate::pool::Dial;

#[test]
fn retry_on_parsing() {
    let r = RetryOn::parse(&[
        "gateway-error".to_string(),
        "connect-failure".into(),
        "409".into(),
        "611".into(),
        "612".into(),
        "99".into(),
    ]);
    assert!(r.status(503) && r.status(409) && !r.status(500));
    assert!(r.status(611) && !r.status(612) && !r.status(99) && !r.status(100));
    assert!(r.connect());
    let d = Policy::for_route(None, None);
    assert_eq!(d.retries, 2);
    assert!(d.on.status(503) && !d.on.status(500));
}

/// How a test upstream answers each request.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// After this long (paused time), then 200.
    Slow(Duration),
}

/// A loopback HTTP/1 upstream answering `answer`; counts its requests.
async fn upstream(answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let status = match answer {
                            Answer::Status(s) => s,
                            Answer::Slow(d) => {
                                tokio::time::sleep(d).await;
                                200
                            }
                        };
                        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *r.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

/// A plaintext round-robin cluster of `addrs`, in that order.
fn cluster(addrs: &[SocketAddr]) -> Arc<Cluster> {
    Arc::new(Cluster {
        name: "outbound|80||echo.default.svc.cluster.local".into(),
        host: Arc::from("echo.default.svc.cluster.local"),
        service_name: Arc::from("echo"),
        namespace: Arc::from("default"),
        port: 80,
        protocol: Protocol::Http1,
        endpoints: addrs
            .iter()
            .map(|a| Endpoint {
                addr: *a,
                labels: Default::default(),
                service_account: None,
                tls: UpstreamTls::Plaintext,
            })
            .collect(),
        lb: LbPolicy::RoundRobin,
        limits: None,
        outlier: None,
        pinned: false,
    })
}

/// Sends one GET to `c` under `policy` with `body`.
async fn send(c: &Arc<Cluster>, policy: &Policy, body: ReqBody) -> Result<Sent, Failed> {
    let pool = Pool::new(Dial::Direct, Arc::new(TlsState::default()));
    let bound = crate::state::Runtime::default().bind(c);
    let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    let keys = RequestKeys {
        headers: None,
        source_ip: None,
    };
    let meta = http::HeaderValue::from_static("x");
    to_cluster(
        &pool,
        c,
        &bound,
        &parts,
        body,
        Protocol::Http1,
        "echo",
        policy,
        &keys,
        &meta,
    )
    .await
}

fn replayable() -> ReqBody {
    ReqBody::Replayable(Bytes::new())
}

#[tokio::test(start_paused = true)]
async fn a_503_is_retried_on_the_other_endpoint() {
    let (a, a_hits) = upstream(Answer::Status(503)).await;
    let (b, b_hits) = upstream(Answer::Status(200)).await;
    let sent = send(
        &cluster(&[a, b]),
        &Policy::for_route(None, None),
        replayable(),
    )
    .await
    .map_err(|f| f.flags)
    .unwrap();
    assert_eq!(sent.response.status(), 200);
    assert_eq!((sent.endpoint.addr, sent.attempts), (b, 2));
    assert_eq!(a_hits.load(Ordering::SeqCst), 1);
    assert_eq!(b_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_is_sent_once_and_its_503_returned() {
    let (a, a_hits) = upstream(Answer::Status(503)).await;
    let (b, b_hits) = upstream(Answer::Status(200)).await;
    let body = ReqBody::Stream(crate::util::empty());
    let sent = send(&cluster(&[a, b]), &Policy::for_route(None, None), body)
        .await
        .map_err(|f| f.flags)
        .unwrap();
    assert_eq!((sent.response.status().as_u16(), sent.attempts), (503, 1));
    assert_eq!(a_hits.load(Ordering::SeqCst), 1);
    assert_eq!(b_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_moves_on_to_the_next_endpoint() {
    let (a, a_hits) = upstream(Answer::Slow(Duration::from_secs(10))).await;
    let (b, _) = upstream(Answer::Status(200)).await;
    let policy = Policy {
        retries: 1,
        per_try: Some(Duration::from_secs(1)),
        timeout: None,
        on: RetryOn::parse(&["gateway-error"]),
    };
    let sent = send(&cluster(&[a, b]), &policy, replayable())
        .await
        .map_err(|f| f.flags)
        .unwrap();
    assert_eq!((sent.endpoint.addr, sent.attempts), (b, 2));
    assert_eq!(a_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_route_timeout_ends_the_exchange_with_504_ut() {
    let (a, _) = upstream(Answer::Slow(Duration::from_secs(10))).await;
    let (b, _) = upstream(Answer::Slow(Duration::from_secs(10))).await;
    let policy = Policy {
        retries: 5,
        per_try: None,
        timeout: Some(Duration::from_secs(2)),
        on: RetryOn::parse(&["gateway-error"]),
    };
    let started = Instant::now();
    let failed = match send(&cluster(&[a, b]), &policy, replayable()).await {
        Ok(s) => panic!("answered {}", s.response.status()),
        Err(f) => f,
    };
    assert_eq!((failed.status, failed.flags), (504, "UT"));
    // Paused time: the route timeout passed, not the upstreams' 10 s.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_then_flagged_urx_uf() {
    // Bound then closed: nothing listens there.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (b, b_hits) = upstream(Answer::Status(200)).await;
    let policy = Policy::for_route(None, None);
    let sent = send(&cluster(&[gone, b]), &policy, replayable())
        .await
        .map_err(|f| f.flags)
        .unwrap();
    assert_eq!((sent.endpoint.addr, sent.attempts), (b, 2));
    assert_eq!(b_hits.load(Ordering::SeqCst), 1);
    let failed = match send(&cluster(&[gone]), &policy, replayable()).await {
        Ok(s) => panic!("answered {}", s.response.status()),
        Err(f) => f,
    };
    assert_eq!((failed.status, failed.flags), (503, "URX,UF"));
}
