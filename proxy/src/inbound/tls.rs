//! Inbound mTLS termination (the mesh side of [`crate::mtls`]). A connection whose ClientHello offers one of
//! Istio's ALPN values comes from a sidecar: it is terminated here (TLS 1.3,
//! client certificate chained to the mesh roots, SPIFFE identity of our trust
//! domain), then carried as HTTP or TCP by the negotiated ALPN. Any other first
//! bytes (plaintext, or the app's own TLS) are left to the plaintext path, which
//! STRICT refuses and PERMISSIVE accepts.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::conn::{ConnCtx, DrainWatch};
use crate::detect::{self, Detected};
use crate::mtls::certs::Creds;
use crate::mtls::PeerCert;
use crate::snapshot::Protocol;

/// What the first bytes of an inbound connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello offering an Istio ALPN: a sidecar's mTLS.
    Istio,
    /// TLS without Istio's ALPN (the app's own TLS).
    OtherTls,
    /// Anything else, or nothing within the detection window.
    Plain,
}

/// Peeks (never consumes) until the ClientHello is complete or `window` ends.
pub async fn classify(stream: &TcpStream, window: Duration) -> Hello {
    if detect::detect(stream, window).await != Detected::Tls {
        return Hello::Plain;
    }
    let mut buf = vec![0u8; 8192];
    let deadline = tokio::time::Instant::now() + window.max(Duration::from_millis(500));
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Hello::OtherTls,
        };
        if let Some(alpns) = crate::sni::alpn(&buf[..n]) {
            let istio = alpns
                .iter()
                .any(|a| crate::mtls::ISTIO_ALPNS.contains(&a.as_slice()));
            return if istio { Hello::Istio } else { Hello::OtherTls };
        }
        let need = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        if n >= need || n == buf.len() {
            return Hello::OtherTls;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Terminates a sidecar's mTLS and serves what it carries.
pub async fn serve(
    stream: TcpStream,
    ctx: Arc<ConnCtx>,
    creds: Arc<Creds>,
    declared: Protocol,
    watcher: DrainWatch,
) {
    let shared = ctx.shared.clone();
    let addrs = (stream.local_addr().ok(), stream.peer_addr().ok());
    let accept = crate::mtls::handshake::accept(creds.server.clone(), stream);
    let (tls, hello) = match tokio::time::timeout(Duration::from_secs(10), accept).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(peer = %ctx.peer, error = %e, "mTLS handshake failed");
            shared.metrics.mtls_handshake_failed();
            return;
        }
        Err(_) => {
            tracing::info!(peer = %ctx.peer, "mTLS handshake timed out");
            shared.metrics.mtls_handshake_failed();
            return;
        }
    };
    let peer = hello
        .certs
        .first()
        .map(|der| PeerCert::from_der(der, &shared.cfg.trust_domain));
    let peer = match peer {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            tracing::info!(peer = %ctx.peer, error = %e, "mTLS peer refused");
            shared.metrics.mtls_handshake_failed();
            return;
        }
        None => return, // the verifier requires a certificate; unreachable in practice
    };
    let alpn = hello.alpn.unwrap_or_default();
    let http =
        alpn.starts_with(b"istio-http") || alpn == crate::mtls::ALPN_H2 || declared.is_http();
    tracing::debug!(identity = %peer.identity, alpn = %String::from_utf8_lossy(&alpn), "mTLS accepted");
    if http {
        let ctx = Arc::new(ConnCtx {
            xfcc: crate::mtls::xfcc(&shared.me.principal, &peer.hash, &peer.identity)
                .try_into()
                .ok(),
            shared: ctx.shared.clone(),
            peer: ctx.peer,
            orig_dst: ctx.orig_dst,
            direction: ctx.direction,
            peer_identity: Some(peer.identity.clone()),
        });
        super::http::serve(tls, ctx, watcher).await;
    } else {
        // AuthorizationPolicy on the decrypted connection, with the verified peer.
        let snap = shared.store.load();
        let verdict = super::gate::tcp_verdict(
            snap.as_deref(),
            ctx.peer,
            ctx.orig_dst,
            Some(&peer.identity),
        );
        super::tcp::carry(
            tls,
            addrs,
            ctx.orig_dst,
            &shared,
            None,
            Some(&peer),
            verdict,
        )
        .await;
    }
}
