//! The original destination of a redirected connection (`SO_ORIGINAL_DST`, and
//! `IP6T_SO_ORIGINAL_DST` for IPv6), which the NAT REDIRECT rules preserve in
//! conntrack. This is how a captured connection tells where the app meant to go.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

/// Reads the pre-NAT destination of an accepted, redirected socket. Returns the
/// socket's local address when it was not redirected (direct connections to
/// the capture port), which callers treat as "no original destination".
pub fn original_dst<S: AsFd>(sock: &S, local: SocketAddr) -> std::io::Result<SocketAddr> {
    match local {
        SocketAddr::V4(_) => {
            let sin = getsockopt(sock, sockopt::OriginalDst).map_err(std::io::Error::from)?;
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            let port = u16::from_be(sin.sin_port);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        SocketAddr::V6(_) => {
            let sin6 = getsockopt(sock, sockopt::Ip6tOriginalDst).map_err(std::io::Error::from)?;
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
        }
    }
}
