//! Upstream connection pools. Outbound requests go to the chosen endpoint's
//! address (the proxy runs as UID 1337, so the redirect rules let these
//! connections out). Inbound requests go to the app on `127.0.0.1:<port>` from the
//! source `127.0.0.6` (which the rules exempt), falling back to the pod IP for
//! apps that bind only to it, as Istio's sidecar does.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpSocket, TcpStream};

/// The body type every proxied request and response uses.
pub type Body = BoxBody<Bytes, hyper::Error>;

pub struct Clients {
    pub out_h1: Client<HttpConnector, Body>,
    pub out_h2: Client<HttpConnector, Body>,
    pub in_h1: Client<InboundConnector, Body>,
    pub in_h2: Client<InboundConnector, Body>,
}

impl Clients {
    pub fn new(instance_ip: Option<IpAddr>) -> Clients {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let inbound = InboundConnector { instance_ip };
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(60))
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new());
            b
        };
        Clients {
            out_h1: builder().build(http.clone()),
            out_h2: builder().http2_only(true).build(http),
            in_h1: builder().build(inbound.clone()),
            in_h2: builder().http2_only(true).build(inbound),
        }
    }
}

/// Connects to the local app from 127.0.0.6.
#[derive(Clone)]
pub struct InboundConnector {
    instance_ip: Option<IpAddr>,
}

const PASSTHROUGH_SRC: Ipv4Addr = mesh_api::ports::INBOUND_PASSTHROUGH_SRC_V4;

/// Connects from `127.0.0.6` to `127.0.0.1:port`, or to the pod IP when nothing
/// listens on loopback.
pub async fn connect_local_app(port: u16, instance_ip: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    match connect_from(SocketAddr::new(PASSTHROUGH_SRC.into(), 0), local).await {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => match instance_ip {
            Some(IpAddr::V4(ip)) => {
                connect_from(SocketAddr::new(PASSTHROUGH_SRC.into(), 0), SocketAddr::new(ip.into(), port)).await
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

impl tower_service::Service<http::Uri> for InboundConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let ip = self.instance_ip;
        Box::pin(async move {
            let port = uri.port_u16().unwrap_or(80);
            connect_local_app(port, ip).await.map(TokioIo::new)
        })
    }
}
