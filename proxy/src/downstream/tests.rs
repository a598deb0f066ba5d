use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::*;

const T: Timeouts = Timeouts {
    first_byte: Duration::from_secs(15),
    idle: Duration::from_secs(3600),
    close_grace: Duration::from_secs(5),
};

#[test]
fn reset_budget() {
    let b = ResetBudget::DEFAULT;
    // Below the minimum number of streams nothing counts, even all reset.
    assert!(!b.exceeded(99, 99));
    // Exactly half is allowed; more than half is not.
    assert!(!b.exceeded(100, 50));
    assert!(b.exceeded(100, 51));
    assert!(!b.exceeded(265_160, 1_000));
    assert!(b.exceeded(265_160, 265_160));
    assert!(!b.exceeded(u64::MAX, u64::MAX / 200));
}

#[tokio::test(start_paused = true)]
async fn silent_connection_closes_at_first_byte_timeout() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    let start = Instant::now();
    assert_eq!(
        decide(Instant::now(), &s.facts(None), &T),
        Next::CheckAt(start + T.first_byte)
    );
    tokio::time::advance(T.first_byte - Duration::from_millis(1)).await;
    assert!(matches!(
        decide(Instant::now(), &s.facts(None), &T),
        Next::CheckAt(_)
    ));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        decide(Instant::now(), &s.facts(None), &T),
        Next::Close(Reason::FirstByte)
    );
}

#[tokio::test(start_paused = true)]
async fn idle_is_measured_from_the_last_request_progress() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    let (a, mut b) = tokio::io::duplex(64);
    let mut io = Activity::new(a, s.clone());
    b.write_all(b"GET").await.unwrap();
    let mut buf = [0u8; 3];
    io.read_exact(&mut buf).await.unwrap();
    assert!(s.facts(None).first_byte);
    assert_eq!(s.read_bytes.load(Ordering::Relaxed), 3);
    tokio::time::advance(Duration::from_secs(600)).await;
    let g = s.open_stream();
    let body = g.respond(crate::util::full(http::StatusCode::OK, "ok").into_body());
    let progressed = Instant::now();
    // Bytes that are not requests (PINGs, SETTINGS) do not keep it alive.
    tokio::time::advance(Duration::from_secs(3000)).await;
    io.write_all(b"PING").await.unwrap();
    assert_eq!(
        decide(Instant::now(), &s.facts(None), &T),
        Next::CheckAt(progressed + T.idle)
    );
    drop(body);
    let ended = Instant::now();
    tokio::time::advance(T.idle).await;
    assert_eq!(
        decide(Instant::now(), &s.facts(None), &T),
        Next::GoAway(Reason::Idle)
    );
    // Told to go away: the grace, then a hard close.
    let since = Instant::now();
    assert_eq!(
        decide(Instant::now(), &s.facts(Some(since)), &T),
        Next::CheckAt(since + T.close_grace)
    );
    tokio::time::advance(T.close_grace).await;
    assert_eq!(
        decide(Instant::now(), &s.facts(Some(since)), &T),
        Next::Close(Reason::GraceOver)
    );
    assert!(ended < since);
}

#[tokio::test(start_paused = true)]
async fn idle_shorter_than_first_byte_is_checked_in_time() {
    // The watchdog sleeps until its deadline; the first byte does not wake it,
    // so with no byte yet the next look must already be at the idle deadline.
    let t = Timeouts {
        idle: Duration::from_secs(2),
        ..T
    };
    let s = ConnState::new(ResetBudget::DEFAULT);
    let start = Instant::now();
    assert_eq!(
        decide(start, &s.facts(None), &t),
        Next::CheckAt(start + t.idle)
    );
    s.io(true, 9); // a PING flood: bytes, never a request
    tokio::time::advance(t.idle).await;
    assert_eq!(
        decide(Instant::now(), &s.facts(None), &t),
        Next::GoAway(Reason::Idle)
    );
}

#[tokio::test(start_paused = true)]
async fn premature_resets_spend_the_budget() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    s.io(true, 24);
    // 60 answered, 40 reset unanswered: 40% of 100, within budget.
    for _ in 0..60 {
        let g = s.open_stream();
        drop(g.respond(crate::util::full(http::StatusCode::OK, "").into_body()));
    }
    for _ in 0..40 {
        drop(s.open_stream());
    }
    assert!(!s.facts(None).reset_exceeded);
    assert!(matches!(
        decide(Instant::now(), &s.facts(None), &T),
        Next::CheckAt(_)
    ));
    // A paced flood: every further stream reset before its response.
    let mut n = 0;
    while !s.facts(None).reset_exceeded {
        drop(s.open_stream());
        n += 1;
        assert!(n < 1000, "budget never spent");
    }
    // 60 answered of 100 + n: more than half reset once n > 20.
    assert_eq!(n, 21);
    assert_eq!(
        decide(Instant::now(), &s.facts(None), &T),
        Next::GoAway(Reason::ResetFlood)
    );
    // The watchdog is woken at once, not at its next deadline.
    tokio::time::timeout(Duration::from_millis(1), s.flood.notified())
        .await
        .expect("flood notified");
}

#[tokio::test(start_paused = true)]
async fn bytes_without_a_request_in_flight_are_a_control_flood() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    // A request's headers, then its body while it is in flight: never a flood.
    s.io(true, 60 * 1024);
    let g = s.open_stream();
    s.io(true, 10 * 1024 * 1024);
    let body = g.respond(crate::util::full(http::StatusCode::OK, "").into_body());
    assert!(!s.facts(None).control_flood);
    drop(body);
    // Then PINGs with nothing in flight.
    for _ in 0..(CONTROL_BYTES / 17) {
        s.io(true, 17);
    }
    assert!(!s.facts(None).control_flood);
    s.io(true, 17);
    assert!(s.facts(None).control_flood);
    assert_eq!(
        decide(Instant::now(), &s.facts(None), &T),
        Next::GoAway(Reason::ControlFlood)
    );
    tokio::time::timeout(Duration::from_millis(1), s.flood.notified())
        .await
        .expect("watchdog woken");
    // A new request starts the count again.
    let _g = s.open_stream();
    assert!(!s.facts(None).control_flood);
}

/// `n` HTTP/2 PING frames (after the client preface when `preface`).
fn pings(n: usize, preface: bool) -> Vec<u8> {
    let mut b = if preface {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    } else {
        Vec::new()
    };
    for _ in 0..n {
        b.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0]);
        b.extend_from_slice(b"12345678");
    }
    b
}

/// Reads everything `io` will give (until it stops or `max` bytes).
fn drain_reads<S: AsyncRead + Unpin>(io: &mut Activity<S>, max: usize) -> usize {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut buf = vec![0u8; READ_SLICE];
    let mut read = 0;
    for _ in 0..max {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *io).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if !rb.filled().is_empty() => read += rb.filled().len(),
            Poll::Pending if !io.state.is_spent() => {}
            _ => break,
        }
    }
    read
}

#[tokio::test(start_paused = true)]
async fn a_ping_flood_spends_the_control_frame_budget() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    let (a, mut b) = tokio::io::duplex(1 << 20);
    let mut io = Activity::new(a, s.clone());
    // The burst: allowed.
    b.write_all(&pings(crate::h2scan::ControlBucket::BURST as usize, true))
        .await
        .unwrap();
    drain_reads(&mut io, 100);
    assert!(!s.facts(None).control_flood);
    // Refilled at its rate: a keepalive PING now and then is fine.
    tokio::time::advance(Duration::from_secs(1)).await;
    b.write_all(&pings(10, false)).await.unwrap();
    drain_reads(&mut io, 100);
    assert!(!s.facts(None).control_flood);
    // While a request is in flight PINGs do not count (BDP probes).
    let g = s.open_stream();
    b.write_all(&pings(1000, false)).await.unwrap();
    drain_reads(&mut io, 1000);
    assert!(!s.facts(None).control_flood);
    drop(g.respond(crate::util::full(http::StatusCode::OK, "").into_body()));
    // One more with nothing in flight: a flood, far below the byte budget.
    b.write_all(&pings(1, false)).await.unwrap();
    drain_reads(&mut io, 10);
    assert!(s.facts(None).control_flood);
    assert!(s.is_spent());
    assert!(s.read_bytes.load(Ordering::Relaxed) < CONTROL_BYTES);
}

/// Reads `total` bytes from `io`, or panics if its flood budget stops the
/// reads first.
async fn read_all<S: AsyncRead + Unpin>(io: &mut Activity<S>, total: usize) {
    let mut buf = vec![0u8; READ_SLICE];
    let mut read = 0;
    while read < total {
        let r = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            Poll::Ready(match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Ready(r) => Some(r.map(|()| rb.filled().len())),
                Poll::Pending => None,
            })
        })
        .await;
        match r {
            Some(Ok(n)) => read += n,
            Some(Err(e)) => panic!("{e}"),
            None => {
                // A slice's yield or tokio's budget; never a spent budget.
                assert!(
                    !io.state.is_spent(),
                    "reads stopped after {read} of {total} bytes"
                );
                tokio::task::yield_now().await;
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_opaque_stream_is_never_a_flood() {
    // The worst case: a TCP stream that looks like an HTTP/2 PING flood, four
    // times the byte budget, with no request ever in flight.
    let s = ConnState::opaque();
    let bytes = pings(4 * CONTROL_BYTES as usize / 17, true);
    let (a, mut b) = tokio::io::duplex(bytes.len() + 1);
    let mut io = Activity::new(a, s.clone());
    b.write_all(&bytes).await.unwrap();
    read_all(&mut io, bytes.len()).await;
    assert!(!s.is_spent());
    assert!(!s.facts(None).control_flood);
    assert_eq!(s.read_bytes.load(Ordering::Relaxed), bytes.len() as u64);
}

#[tokio::test(start_paused = true)]
async fn an_upgraded_connection_carries_its_tunnel_without_a_budget() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    let (a, mut b) = tokio::io::duplex(4 * CONTROL_BYTES as usize);
    let mut io = Activity::new(a, s.clone());
    // The upgrade request, answered (101) and gone: nothing in flight.
    let g = s.open_stream();
    drop(g.respond(crate::util::full(http::StatusCode::SWITCHING_PROTOCOLS, "").into_body()));
    s.set_opaque();
    // The tunnel's bytes: more than the budget.
    b.write_all(&vec![7u8; 2 * CONTROL_BYTES as usize])
        .await
        .unwrap();
    read_all(&mut io, 2 * CONTROL_BYTES as usize).await;
    assert!(!s.is_spent());
    assert!(!s.facts(None).control_flood);
}

#[tokio::test(start_paused = true)]
async fn tcp_idle_counts_bytes_either_way() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    let idle = Duration::from_secs(3600);
    let (a, mut b) = tokio::io::duplex(64);
    let mut io = Activity::new(a, s.clone());
    tokio::time::advance(Duration::from_secs(3000)).await;
    // A server-first protocol: only writes towards the client.
    io.write_all(b"220 ready\r\n").await.unwrap();
    let mut buf = [0u8; 11];
    b.read_exact(&mut buf).await.unwrap();
    let last = Instant::now();
    assert_eq!(
        decide_tcp(Instant::now(), s.last_io(), idle),
        Next::CheckAt(last + idle)
    );
    tokio::time::advance(idle).await;
    assert_eq!(
        decide_tcp(Instant::now(), s.last_io(), idle),
        Next::Close(Reason::TcpIdle)
    );
    assert_eq!(s.written_bytes.load(Ordering::Relaxed), 11);
}

#[tokio::test(start_paused = true)]
async fn cap_refuses_connection_n_plus_one_and_logs_once_per_interval() {
    let cap = ConnCap::new(2);
    let a = cap.admit().expect("1");
    let _b = cap.admit().expect("2");
    assert!(cap.admit().is_none(), "3 is over the cap");
    assert!(cap.log_refusal(), "first refusal is logged");
    assert!(!cap.log_refusal(), "the next within the interval is not");
    tokio::time::advance(REFUSAL_LOG_INTERVAL).await;
    assert!(cap.log_refusal(), "logged again after the interval");
    drop(a);
    assert!(cap.admit().is_some(), "a closed connection frees its slot");
    let t = Instant::now();
    assert!(should_log(None, t, REFUSAL_LOG_INTERVAL));
    assert!(!should_log(
        Some(t),
        t + Duration::from_secs(9),
        REFUSAL_LOG_INTERVAL
    ));
}

#[tokio::test]
async fn reads_yield_after_a_slice() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    let (a, mut b) = tokio::io::duplex(4 * READ_SLICE);
    b.write_all(&vec![0u8; 3 * READ_SLICE]).await.unwrap();
    let mut io = Activity::new(a, s.clone());
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    // A reader's buffer larger than the slice: no read fills more than a slice.
    let mut buf = vec![0u8; 4 * READ_SLICE];
    let (mut read, mut yields) = (0, 0);
    while read < 3 * READ_SLICE {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut io).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                assert!(rb.filled().len() <= READ_SLICE, "{}", rb.filled().len());
                read += rb.filled().len()
            }
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => yields += 1,
        }
        assert!(yields <= 3, "stuck");
    }
    // Data was always ready: the only Pendings are the slices' yields.
    assert_eq!(yields, 2);
    assert_eq!(s.read_bytes.load(Ordering::Relaxed), 3 * READ_SLICE as u64);
}

#[tokio::test]
async fn reads_stop_once_a_flood_budget_is_spent() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    let (a, mut b) = tokio::io::duplex(4 * CONTROL_BYTES as usize);
    // More than the control budget with no request in flight: a PING flood.
    b.write_all(&vec![0u8; 2 * CONTROL_BYTES as usize])
        .await
        .unwrap();
    let mut io = Activity::new(a, s.clone());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut buf = vec![0u8; READ_SLICE];
    for _ in 0..(2 * CONTROL_BYTES as usize / READ_SLICE) * 2 {
        let mut rb = ReadBuf::new(&mut buf);
        let _ = Pin::new(&mut io).poll_read(&mut cx, &mut rb);
    }
    assert!(s.is_spent());
    assert!(s.facts(None).control_flood);
    // Reading stopped right after the budget: the rest stays unread.
    let read = s.read_bytes.load(Ordering::Relaxed);
    assert!(
        read > CONTROL_BYTES && read <= CONTROL_BYTES + READ_SLICE as u64,
        "{read}"
    );
}

#[test]
fn counters_render() {
    let c = ConnCounters::default();
    c.closed(Reason::ResetFlood);
    c.penalized(Reason::ControlFlood);
    c.overflow_inbound.fetch_add(2, Ordering::Relaxed);
    let mut out = String::new();
    c.render(&mut out);
    assert!(
        out.contains("mesh_downstream_cx_closed_total{reason=\"h2_premature_reset\"} 1"),
        "{out}"
    );
    assert!(
        out.contains("mesh_downstream_cx_overflow_total{listener=\"inbound\"} 2"),
        "{out}"
    );
    assert!(
        out.contains("mesh_downstream_cx_penalized_total{reason=\"control_flood\"} 1"),
        "{out}"
    );
}

#[test]
fn only_a_goaway_h2_sent_is_a_protocol_violation() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    assert!(!is_protocol_violation(&io));
    // A stream-level reason (not a GOAWAY) is not a connection-level violation.
    let reset = h2::Error::from(h2::Reason::PROTOCOL_ERROR);
    assert!(!is_protocol_violation(&reset));
    let wrapped = std::io::Error::other(reset);
    assert!(!is_protocol_violation(&wrapped));
}

/// A request stays in flight from its stream's start until its response body
/// ends, whichever way it ends: answered and read, answered and dropped, or
/// reset before the answer (then it also counts as premature).
#[test]
fn a_request_is_in_flight_until_its_response_body_is_gone() {
    let s = ConnState::new(ResetBudget::DEFAULT);
    assert!(s.quiet());
    let a = s.open_stream();
    let b = s.open_stream();
    assert_eq!(s.in_flight.load(Ordering::Relaxed), 2);
    let body = a.respond(crate::util::full(http::StatusCode::OK, "ok").into_body());
    // Answered but the body not yet sent: still in flight.
    assert_eq!(s.in_flight.load(Ordering::Relaxed), 2);
    drop(b);
    assert_eq!(s.in_flight.load(Ordering::Relaxed), 1);
    assert_eq!(s.premature.load(Ordering::Relaxed), 1);
    drop(body);
    assert!(s.quiet());
    assert_eq!(s.premature.load(Ordering::Relaxed), 1);
}
