//! The benchmark's application: a fixed-response HTTP server (HTTP/1.1 and h2c
//! prior knowledge on the same ports, a constant body of `body` bytes) and a TCP
//! echo server. It does as little as possible per request so that the proxies,
//! not the app, are what the benchmark measures; every variant uses it.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server listens on and answers.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http_ports: Vec<u16>,
    pub tcp_port: u16,
    pub body: usize,
}

/// Binds every port (0.0.0.0), prints one `mesh-bench server listening ...`
/// line, then serves until the process is killed. Single-threaded, like the
/// proxies under test.
pub fn serve(cfg: ServerConfig) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let body = Bytes::from(vec![b'x'; cfg.body]);
        let mut http = Vec::new();
        for port in &cfg.http_ports {
            http.push(TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], *port))).await?);
        }
        let tcp = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], cfg.tcp_port))).await?;
        println!(
            "mesh-bench server listening http={:?} tcp={} body={}",
            cfg.http_ports, cfg.tcp_port, cfg.body
        );
        for l in http {
            tokio::spawn(accept_http(l, body.clone()));
        }
        accept_tcp(tcp).await;
        Ok(())
    })
}

async fn accept_http(listener: TcpListener, body: Bytes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let body = body.clone();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/octet-stream")
                            .body(Full::new(body))
                            .expect("static response"),
                    )
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn accept_tcp(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(echo(stream));
    }
}

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
