//! TCP listeners with the accept queue Linux allows (`net.core.somaxconn`),
//! as Envoy's listeners (`tcp_backlog_size` unset) and istiod's Go listeners
//! have, instead of the 128 that tokio's `TcpListener::bind` asks for (as
//! the standard library does).
//!
//! When the queue is full, Linux drops the handshake and the client connects
//! only on its retransmission, 1, 3, 7 or 15 s later: a node pool's proxies
//! reconnecting to a restarted agent, or a burst of clients at an ingress
//! gateway, would wait seconds for a process that was only busy for a moment.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};

/// Asked for; the kernel caps it at `net.core.somaxconn` (4,096 by default).
pub const ACCEPT_BACKLOG: u32 = 65_535;

/// Binds `addr` and listens with [`ACCEPT_BACKLOG`], with `SO_REUSEADDR` as
/// tokio's `TcpListener::bind` sets it (a restarted process binds at once).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The queue size itself is checked on the agent's sync port
    // (proxy/agent/tests/stream.rs, with `ss`).

    #[tokio::test]
    async fn a_released_port_binds_again_and_a_taken_one_says_so() {
        let ours = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = ours.local_addr().unwrap();
        let err = listen(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        // A connection left in TIME_WAIT does not keep the port (SO_REUSEADDR).
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = ours.accept().await.unwrap();
        drop(server);
        drop(client);
        drop(ours);
        listen(addr).unwrap();
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            listen("[::1]:0".parse().unwrap()).unwrap();
        }
    }
}
