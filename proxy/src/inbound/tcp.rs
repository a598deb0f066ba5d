//! Inbound TCP: a connection to the app (plaintext, or decrypted by
//! `inbound::tls`) carried byte for byte to it, unless the TCP policy verdict
//! ([`super::gate::tcp_verdict`]) refused it; `istio_tcp_*` metrics as
//! `reporter="destination"`, the source named by the peer's verified identity.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::metrics::{Reporter, Workload};
use crate::shared::Shared;
use crate::tcp::{self, TcpMeta};

/// Carries an inbound connection (plaintext, or already decrypted) to the app.
pub(crate) async fn carry<D>(
    stream: D,
    addrs: (Option<SocketAddr>, Option<SocketAddr>),
    orig_dst: SocketAddr,
    shared: &Arc<Shared>,
    pre: Option<TcpStream>,
    peer: Option<&crate::mtls::PeerCert>,
    verdict: crate::authz::Verdict,
) where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let snap = shared.store.load();
    let cluster = snap
        .as_ref()
        .and_then(|s| s.cluster_for_dst(orig_dst).cloned());
    let source = match peer {
        Some(p) => {
            // The caller's pod among the endpoints this proxy knows, by address.
            let ip = addrs.1.map(|a| a.ip());
            let endpoint = snap.as_ref().zip(ip).and_then(|(s, ip)| {
                s.clusters().iter().find_map(|c| {
                    let e = c.endpoints.iter().find(|e| e.addr.ip() == ip)?;
                    Some((&*e.labels, &c.namespace, e.service_account.as_deref()))
                })
            });
            Workload::of_peer(
                &p.identity.to_string(),
                &p.identity.namespace,
                &p.identity.service_account,
                endpoint,
            )
        }
        None => Workload::unknown(),
    };
    let meta = TcpMeta {
        reporter: Reporter::Destination,
        source,
        destination: shared.me.clone(),
        service: cluster
            .as_ref()
            .map(|c| c.host.clone())
            .unwrap_or_else(|| Arc::from("unknown")),
        service_name: cluster
            .as_ref()
            .map(|c| c.service_name.clone())
            .unwrap_or_else(|| Arc::from("unknown")),
        service_namespace: shared.me.namespace.clone(),
        cluster: format!("inbound|{}||", orig_dst.port()).into(),
        mtls: peer.is_some(),
    };
    if !verdict.is_allowed() {
        // Envoy's network RBAC filter: the connection is closed, nothing reaches the app.
        tracing::debug!(details = %verdict.details(), "inbound connection denied");
        drop(pre);
        tcp::refuse(shared, stream, meta, "-").await;
        return;
    }
    let up = match pre {
        Some(up) => Ok(up),
        None => crate::endpoint::connect_local_app(orig_dst.port(), shared.cfg.instance_ip).await,
    };
    match up {
        Ok(up) => {
            let upstream = up.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            tcp::splice_io(shared, stream, addrs, up, upstream, meta, "-").await
        }
        Err(_) => tcp::refuse(shared, stream, meta, "UF").await,
    }
}
