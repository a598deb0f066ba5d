//! Dialing upstreams. Outbound connections go to the chosen endpoint's address
//! (the proxy runs as UID 1337, so the redirect rules let these connections
//! out). Inbound ones go to the app on `127.0.0.1:<port>` from the source
//! `127.0.0.6` (which the rules exempt), falling back to the pod IP for apps
//! that bind only to it, as Istio's sidecar does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Connects to an upstream (as this process's UID, which the rules exempt).
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect {addr} timed out"),
            )
        })??;
    s.set_nodelay(true)?;
    Ok(s)
}

const PASSTHROUGH_SRC: Ipv4Addr = mesh_api::ports::INBOUND_PASSTHROUGH_SRC_V4;

/// Connects from `127.0.0.6` to `127.0.0.1:port`, or to the pod IP when nothing
/// listens on loopback.
pub async fn connect_local_app(
    port: u16,
    instance_ip: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    match connect_from(SocketAddr::new(PASSTHROUGH_SRC.into(), 0), local).await {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => match instance_ip {
            Some(IpAddr::V4(ip)) => {
                connect_from(
                    SocketAddr::new(PASSTHROUGH_SRC.into(), 0),
                    SocketAddr::new(ip.into(), port),
                )
                .await
            }
            _ => Err(e),
        },
        other => other,
    }
}

async fn connect_from(src: SocketAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(src)?;
    let s = sock.connect(dst).await?;
    s.set_nodelay(true)?;
    Ok(s)
}
