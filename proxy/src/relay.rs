//! One request relayed in one attempt to an address fixed in advance, and the
//! answer built from what came back: inbound to the local app, outbound
//! straight to the original destination (`ALLOW_ANY` passthrough). Hop-by-hop
//! headers go, an upgrade (101) is tunnelled, the response code and checked-in
//! connection are recorded, and a failed exchange becomes Envoy's local reply
//! (400 `DPE`/`DC` for a bad downstream body, 503 `UF`/`UC`). The routed
//! outbound path, with endpoints and retries, is `outbound::forward`.
//!
//! Shared by both directions so the answer is built once; what differs by
//! direction is chosen by the constructor and branched on below.

use std::net::SocketAddr;

use http::header;
use http::{Request, Response, StatusCode, Version};

use crate::body::Body;
use crate::direction::Direction;
use crate::peer;
use crate::pool::{Checkin, Pool, SendError};
use crate::record::{metered, Record};
use crate::shared::Shared;
use crate::snapshot::Protocol;
use crate::util::{ensure_host, full, strip_hop_by_hop, tunnel, upstream_request};

/// Where and how to relay one request: [`Relay::to_app`] or
/// [`Relay::passthrough`].
pub(crate) struct Relay<'a> {
    direction: Direction,
    pool: &'a Pool,
    addr: SocketAddr,
    /// How to speak to `addr` (HTTP/2 only when the upstream is known to).
    proto: Protocol,
    /// The authority to send when the request names none: the app's own
    /// address inbound (built only then), `-` for passthrough.
    default_authority: Option<u16>,
    /// Inbound: the caller described itself (a sidecar), so it learns who
    /// answered; otherwise the peer-metadata header is removed. Outbound: the
    /// header is left as the upstream sent it.
    answer_metadata: bool,
}

impl<'a> Relay<'a> {
    /// Inbound: to the local app on `port` (127.0.0.1), over HTTP/2 when the
    /// caller spoke it (h2c); see [`Relay::answer_metadata`].
    pub(crate) fn to_app(shared: &'a Shared, port: u16, h2: bool, answer_metadata: bool) -> Self {
        Relay {
            direction: Direction::Inbound,
            pool: &shared.clients.inbound,
            addr: SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port),
            proto: if h2 { Protocol::Http2 } else { Protocol::Http1 },
            default_authority: Some(port),
            answer_metadata,
        }
    }

    /// Outbound `ALLOW_ANY` passthrough: HTTP/1.1 to where the app sent it.
    pub(crate) fn passthrough(shared: &'a Shared, orig_dst: SocketAddr) -> Self {
        Relay {
            direction: Direction::Outbound,
            pool: &shared.clients.outbound,
            addr: orig_dst,
            proto: Protocol::Http1,
            default_authority: None,
            answer_metadata: false,
        }
    }
}

/// Sends `req` as `relay` says and answers with the upstream's response (or
/// a local reply), wrapped so `record` is written when the body ends.
pub(crate) async fn relay(
    mut req: Request<Body>,
    relay: Relay<'_>,
    record: Record,
) -> Response<Body> {
    let is_upgrade =
        req.headers().contains_key(header::UPGRADE) && req.version() != Version::HTTP_2;
    let downstream_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    strip_hop_by_hop(req.headers_mut(), is_upgrade);
    let (mut parts, body) = req.into_parts();
    let authority = ensure_host(&mut parts).unwrap_or_else(|| match relay.default_authority {
        Some(port) => format!("127.0.0.1:{port}"),
        None => "-".into(),
    });
    let Some(up) = upstream_request(parts, body, relay.proto, &authority) else {
        return metered(
            full(StatusCode::BAD_REQUEST, "bad request target\n"),
            record,
        );
    };
    let result = match relay.proto {
        Protocol::Http2 => relay.pool.send_h2(relay.addr, up).await.map(|r| (r, None)),
        _ => relay.pool.send_h1(relay.addr, up).await,
    };
    answer(
        result,
        downstream_upgrade,
        relay.direction,
        relay.answer_metadata,
        record,
    )
}

/// The downstream answer for the result of one upstream exchange.
fn answer(
    result: Result<(Response<Body>, Option<Checkin>), SendError>,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    direction: Direction,
    answer_metadata: bool,
    mut record: Record,
) -> Response<Body> {
    let inbound = direction == Direction::Inbound;
    match result {
        Ok((mut r, checkin)) => {
            record.checkin = checkin;
            let upstream_upgrade =
                (r.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut r));
            let (mut rparts, rbody) = r.into_parts();
            record.labels.response_code = rparts.status.as_u16();
            if inbound {
                // The local app is this workload: a trailers-only gRPC answer's
                // status is in the headers, and a sidecar caller learns who
                // answered (never what the app claims).
                record.labels.grpc_response_status = crate::record::grpc_status(&rparts.headers);
                if answer_metadata {
                    rparts
                        .headers
                        .insert(peer::HEADER, record.shared.me_header.clone());
                } else {
                    rparts.headers.remove(peer::HEADER);
                }
            }
            match (upstream_upgrade, downstream_upgrade) {
                (Some(up), Some(down)) => {
                    tokio::spawn(tunnel(down, up));
                }
                // A 101 the caller did not ask for: inbound has always passed
                // it on with its headers as they came.
                (Some(_), None) if inbound => {}
                _ => strip_hop_by_hop(&mut rparts.headers, false),
            }
            metered(Response::from_parts(rparts, rbody), record)
        }
        Err(e) if e.downstream_body_flags().is_some() => {
            record.labels.response_code = 400;
            record.labels.response_flags = e.downstream_body_flags().unwrap_or("DPE");
            metered(full(StatusCode::BAD_REQUEST, crate::pool::BAD_BODY), record)
        }
        Err(e) => {
            let connect = e.is_connect();
            record.labels.response_code = 503;
            record.labels.response_flags = if connect { "UF" } else { "UC" };
            // Passthrough has always named a connection failure either way.
            let message = if connect || !inbound {
                crate::pool::CONNECT_FAILURE
            } else {
                crate::pool::RESET
            };
            metered(full(StatusCode::SERVICE_UNAVAILABLE, message), record)
        }
    }
}
