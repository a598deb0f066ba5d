//! The one-shot certificate exchange with the mesh CA: a CSR and the pod's
//! token out, a signed chain and the roots back, over its own connection.

use super::transport::{connect, Transport};
use crate::syncapi::{AgentMessage, ClientMessage};
use crate::syncframe::{encode, framed, ProtocolError};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;

/// A signed chain (leaf first) and the mesh roots, PEM.
#[derive(Debug, Clone)]
pub struct SignedCert {
    pub chain: Vec<String>,
    pub roots: Vec<String>,
}

/// Asks the mesh CA at `addr` to sign `csr_pem` (one connection, one answer).
pub async fn request_certificate(
    addr: &str,
    transport: &Transport,
    token: &str,
    csr_pem: &str,
    ttl: Duration,
) -> Result<SignedCert, ProtocolError> {
    let exchange = async {
        let mut io = framed(connect(addr, transport).await?);
        io.send(encode(&ClientMessage::Csr {
            token: token.to_string(),
            csr: csr_pem.to_string(),
            ttl_seconds: ttl.as_secs(),
        }))
        .await?;
        let frame = io.next().await.ok_or(ProtocolError::Closed)??;
        match crate::syncframe::decode_agent(&frame)? {
            AgentMessage::Certificate { cert_chain, roots } => Ok(SignedCert {
                chain: cert_chain,
                roots,
            }),
            AgentMessage::Error { message } => Err(ProtocolError::Unexpected(message)),
            AgentMessage::View { .. }
            | AgentMessage::Delta { .. }
            | AgentMessage::Lookup { .. } => Err(ProtocolError::Unexpected(
                "a sync message instead of a certificate".into(),
            )),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| ProtocolError::Unexpected(format!("CA at {addr} did not answer within 10s")))?
}
