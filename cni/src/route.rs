//! TPROXY policy routing over rtnetlink, in the current thread's network namespace:
//! `ip rule add fwmark MARK lookup TABLE` and `ip route add local default dev lo table
//! TABLE`, for IPv4 and (optionally) IPv6. Adding is idempotent (existing entries are
//! kept, never duplicated); removing ignores entries that are already gone.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::rules::Family;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("netlink {what} failed: {source}")]
    Request {
        what: String,
        source: std::io::Error,
    },
    #[error("netlink {what}: bad reply: {reason}")]
    Reply { what: String, reason: String },
}

/// Priority of the TPROXY `ip rule`.
pub const RULE_PRIORITY: u32 = 32764;

/// What TPROXY needs from the routing policy.
#[derive(Debug, Clone, Copy)]
pub struct TproxyRouting {
    pub mark: u32,
    pub table: u32,
}

fn family(f: Family) -> AddressFamily {
    match f {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn rule_msg(f: Family, r: TproxyRouting) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family(f);
    m.header.action = RuleAction::ToTable;
    m.header.table = if r.table < 256 { r.table as u8 } else { 0 };
    // An explicit priority (the one `ip rule add` picks in a fresh netns) lets the
    // kernel recognise a second add as a duplicate (EEXIST) instead of stacking it.
    m.attributes.push(RuleAttribute::Priority(RULE_PRIORITY));
    m.attributes.push(RuleAttribute::FwMark(r.mark));
    m.attributes.push(RuleAttribute::Table(r.table));
    m
}

fn route_msg(f: Family, r: TproxyRouting, lo_index: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(f);
    m.header.destination_prefix_length = 0;
    m.header.table = if r.table < 256 { r.table as u8 } else { 0 };
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Host;
    m.header.kind = RouteType::Local;
    m.attributes.push(RouteAttribute::Table(r.table));
    m.attributes.push(RouteAttribute::Oif(lo_index));
    m.attributes.push(RouteAttribute::Destination(match f {
        Family::V4 => RouteAddress::Inet(std::net::Ipv4Addr::UNSPECIFIED),
        Family::V6 => RouteAddress::Inet6(std::net::Ipv6Addr::UNSPECIFIED),
    }));
    m
}

/// Sends one request and waits for its ACK; `ok_errno` lists errors that mean "already
/// in the desired state".
fn request(
    msg: RouteNetlinkMessage,
    flags: u16,
    what: &str,
    ok_errno: &[i32],
) -> Result<(), RouteError> {
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(RouteError::Socket)?;
    sock.bind_auto().map_err(RouteError::Socket)?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(RouteError::Socket)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = 1;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    sock.send(&buf, 0).map_err(|e| RouteError::Request {
        what: what.to_string(),
        source: e,
    })?;
    let (reply, _) = sock.recv_from_full().map_err(|e| RouteError::Request {
        what: what.to_string(),
        source: e,
    })?;
    let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply).map_err(|e| {
        RouteError::Reply {
            what: what.to_string(),
            reason: e.to_string(),
        }
    })?;
    match parsed.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) if ok_errno.contains(&-code.get()) => Ok(()),
            Some(code) => Err(RouteError::Request {
                what: what.to_string(),
                source: std::io::Error::from_raw_os_error(-code.get()),
            }),
        },
        other => Err(RouteError::Reply {
            what: what.to_string(),
            reason: format!("unexpected {other:?}"),
        }),
    }
}

fn lo_index() -> u32 {
    nix::net::if_::if_nametoindex("lo").unwrap_or(1)
}

/// Adds the TPROXY rule and route for `f` in the current network namespace.
pub fn add(f: Family, r: TproxyRouting) -> Result<(), RouteError> {
    request(
        RouteNetlinkMessage::NewRule(rule_msg(f, r)),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("{} rule add fwmark {} lookup {}", f.name(), r.mark, r.table),
        &[libc::EEXIST],
    )?;
    request(
        RouteNetlinkMessage::NewRoute(route_msg(f, r, lo_index())),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!(
            "{} route add local default dev lo table {}",
            f.name(),
            r.table
        ),
        &[libc::EEXIST],
    )
}

/// Removes what [`add`] created; missing entries are fine.
pub fn remove(f: Family, r: TproxyRouting) -> Result<(), RouteError> {
    let gone = [libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL];
    request(
        RouteNetlinkMessage::DelRule(rule_msg(f, r)),
        0,
        &format!("{} rule del fwmark {} lookup {}", f.name(), r.mark, r.table),
        &gone,
    )?;
    request(
        RouteNetlinkMessage::DelRoute(route_msg(f, r, lo_index())),
        0,
        &format!("{} route del local default table {}", f.name(), r.table),
        &gone,
    )
}
