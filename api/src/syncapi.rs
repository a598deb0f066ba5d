//! Wire types of the config-sync stream between `mesh-agent` (port 15012) and
//! proxies, and the per-proxy view they carry.
//!
//! Framing: each message is one JSON document in a length-delimited frame (4-byte
//! big-endian length, then the bytes) over a TCP stream. The proxy sends
//! [`ClientMessage::Subscribe`] first, then one ACK or NACK per [`AgentMessage::View`].
//! Every view is complete (state of the world), so applying one is atomic and a
//! proxy that missed versions just takes the latest.

pub use crate::gatewayview::{
    GatewayListener, GatewayServer, GatewayTls, GatewayView, TlsCredential, TlsFiles,
};
pub use crate::syncview::{Endpoint, InboundPolicy, ProxyView, Service, ServicePort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest frame either side accepts (a view for a large mesh fits comfortably).
pub const MAX_FRAME: usize = 64 << 20;

/// Who a proxy is; sent once when subscribing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyIdentity {
    pub pod: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub ips: Vec<String>,
    /// A gateway (`mesh-proxy router`, Istio's node type `router`): it gets the
    /// listeners of the Gateways selecting its labels in [`ProxyView::gateway`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub router: bool,
}

/// Proxy → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ClientMessage {
    /// First message. `lastVersion` is the version the proxy already runs (after a
    /// reconnect), so status shows it as acked until a newer one is sent.
    /// `token` is the pod's credential, as in [`ClientMessage::Csr`]: on the TLS
    /// port of an agent with a CA the subscription is authenticated with it and
    /// must be for a pod of the token's namespace and service account. Never
    /// sent in clear (plaintext ports trust their network and ignore it).
    #[serde(rename_all = "camelCase")]
    Subscribe {
        identity: ProxyIdentity,
        last_version: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Hosts the agent added to this proxy's view on demand before a
        /// reconnect: the view is rebuilt with them at once.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        requested: Vec<String>,
        /// The proxy applies [`AgentMessage::Delta`]; without it (a proxy
        /// from before deltas) every push is a full view.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deltas: bool,
    },
    /// The proxy applied `version`.
    Ack { version: u64 },
    /// The proxy rejected `version` and keeps its previous one.
    Nack { version: u64, reason: String },
    /// On-demand discovery: the proxy met a destination it does not know (a
    /// service VIP or pod IP, or an HTTP authority). The agent answers with
    /// [`AgentMessage::Lookup`], after a view that carries the service when
    /// it is in the mesh and visible to the proxy.
    Lookup { target: String },
    /// On-demand discovery, ageing out: the proxy stopped using these hosts
    /// (each one an answer to an earlier [`ClientMessage::Lookup`]). The agent
    /// drops them from the proxy's view and pushes the smaller view. Sent only
    /// after the agent answered a lookup; an agent from before this message
    /// closes the stream at it, and the proxy's next subscription (its
    /// `requested` without these hosts) brings the same smaller view.
    Forget { targets: Vec<String> },
    /// Alone on its own connection (instead of `Subscribe`): asks the mesh CA for a
    /// workload certificate. `csr` is a PEM PKCS#10 request (the key never leaves
    /// the proxy); `token` proves the caller's identity (the projected service
    /// account token in Kubernetes, the pod's local credential otherwise).
    #[serde(rename_all = "camelCase")]
    Csr {
        token: String,
        csr: String,
        ttl_seconds: u64,
    },
}

/// Agent → proxy.
// A view is far larger than the other variants, but a message lives only
// while one frame is encoded or decoded: boxing it buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentMessage {
    /// A complete view for this proxy.
    View { agent: String, view: ProxyView },
    /// The services that changed since the last view sent on this stream
    /// (full or delta); only to proxies that subscribed with `deltas`.
    Delta {
        agent: String,
        delta: crate::syncdelta::ViewDelta,
    },
    /// The agent closes the stream because of what the proxy sent.
    Error { message: String },
    /// Answer to [`ClientMessage::Lookup`]: the service's host, or `None` when
    /// the target is not in the mesh for this proxy (`refused` says why when
    /// the lookup was not looked at, e.g. too many lookups).
    Lookup {
        target: String,
        host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    /// Answer to [`ClientMessage::Csr`]: the leaf first, then its issuers (PEM),
    /// and every trusted mesh root (more than one during a root rotation).
    #[serde(rename_all = "camelCase")]
    Certificate {
        cert_chain: Vec<String>,
        roots: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mtls_survives_the_tagged_message() {
        let mut view = ProxyView::default();
        view.inbound.port_mtls.insert(8080, "PERMISSIVE".into());
        let msg = AgentMessage::View {
            agent: "a".into(),
            view,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert!(
            json.contains(r#""portMtls":{"8080":"PERMISSIVE"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<AgentMessage>(&json).unwrap(), msg);
        let bad = json.replace("8080", "http");
        assert!(serde_json::from_str::<AgentMessage>(&bad).is_err());
    }
}

/// One proxy's row in `/debug/syncz` and `meshctl proxy-status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyStatus {
    pub name: String,
    pub namespace: String,
    pub agent: String,
    pub version_sent: Option<u64>,
    pub version_acked: Option<u64>,
    /// `SYNCED`, `STALE`, `NOT SENT` or `ERROR`.
    pub status: String,
    /// The proxy's rejection reason when `status` is `ERROR`.
    pub reason: Option<String>,
    /// Problems in the view last sent (a gateway's missing or malformed
    /// credential Secret, ...): the parts it disables, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The `/debug/syncz` document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Syncz {
    pub agent: String,
    /// Current mesh snapshot version.
    pub version: u64,
    pub proxies: Vec<ProxyStatus>,
    /// Resources rejected by validation, with their errors.
    pub rejected: Vec<Rejection>,
}

/// A resource that was not applied and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rejection {
    /// `Kind/namespace/name`, or the file for unparseable input.
    pub resource: String,
    pub errors: Vec<String>,
}
