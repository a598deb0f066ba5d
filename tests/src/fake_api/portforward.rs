//! The fake API server's `pods/NAME/portforward?ports=PORT`: the WebSocket
//! upgrade (`v4.channel.k8s.io`) kube-rs asks for, the port announced on the data
//! and error channels, then the data channel bridged to a TCP connection to the
//! real process on 127.0.0.1, or the dial failure on the error channel.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role, Message};

use super::reply::{query_param, status};
use super::store::Fake;

const PROTOCOL: &str = "v4.channel.k8s.io";

pub async fn handle(
    fake: Arc<Fake>,
    ns: &str,
    pod: &str,
    query: &str,
    mut req: Request,
) -> Response {
    let (ns, pod) = (ns.to_string(), pod.to_string());
    if fake.get("Pod", &ns, &pod).is_none() {
        return status(404, "NotFound", format!("pods \"{pod}\" not found"));
    }
    let Some(port) = query_param(query, "ports").and_then(|p| p.parse::<u16>().ok()) else {
        return status(400, "BadRequest", format!("invalid ports in {query:?}"));
    };
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = header("sec-websocket-key");
    if !header("upgrade").eq_ignore_ascii_case("websocket") || key.is_empty() {
        return status(400, "BadRequest", "not a WebSocket upgrade".into());
    }
    if !header("sec-websocket-protocol")
        .split(',')
        .any(|p| p.trim() == PROTOCOL)
    {
        return status(
            400,
            "BadRequest",
            format!("no {PROTOCOL} subprotocol offered"),
        );
    }
    let backend = fake
        .db()
        .backends
        .get(&format!("{ns}/{pod}:{port}"))
        .map(|b| b.rsplit("://").next().unwrap().to_string());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        bridge(ws, &ns, &pod, port, backend).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .header("sec-websocket-protocol", PROTOCOL)
        .body(Body::empty())
        .unwrap()
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

async fn bridge<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    ns: &str,
    pod: &str,
    port: u16,
    backend: Option<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut from_client) = ws.split();
    for ch in [0, 1] {
        if sink.send(frame(ch, &port.to_le_bytes())).await.is_err() {
            return;
        }
    }
    // The pod's loopback: the real process behind it, or nothing listening.
    let dialed = match &backend {
        Some(addr) => tokio::net::TcpStream::connect(addr.as_str()).await,
        None => Err(std::io::ErrorKind::ConnectionRefused.into()),
    };
    let tcp = match dialed {
        Ok(tcp) => tcp,
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "connect: connection refused".to_string()
            } else {
                e.to_string()
            };
            let msg = format!(
                "error forwarding port {port} to pod {ns}/{pod}, uid : failed to connect to localhost:{port} inside namespace of pod {pod}: dial tcp4 127.0.0.1:{port}: {why}"
            );
            let _ = sink.send(frame(1, msg.as_bytes())).await;
            let _ = sink.send(Message::Close(None)).await;
            // Finish the close handshake, as a real server does: dropping the
            // socket with the client's frames unread would reset it, and the
            // client could lose the error frame it already received.
            let drain = async { while let Some(Ok(_)) = from_client.next().await {} };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let mut up = tokio::spawn(async move {
        while let Some(Ok(msg)) = from_client.next().await {
            let data = match msg {
                Message::Binary(b) if b.len() > 1 && b[0] == 0 => b,
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data[1..]).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if sink.send(frame(0, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    // v4 has no half-close: the pod side closing ends the whole stream.
    let _ = sink.send(Message::Close(None)).await;
    // The up loop ends at the client's Close (the handshake's answer).
    if tokio::time::timeout(std::time::Duration::from_secs(5), &mut up)
        .await
        .is_err()
    {
        up.abort();
    }
}
