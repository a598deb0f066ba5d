//! Changed services encoded once per snapshot, for every stream's delta.
//!
//! An endpoint change goes to each proxy whose view holds the service, as a
//! delta from that stream's own version; the service itself is the same for
//! all of them. [`Encoded::delta`] serializes each service once and writes
//! only the per-stream fields around the shared bytes
//! ([`mesh_api::syncencode`]), byte for byte the derived encoding.

use bytes::Bytes;
use mesh_api::syncapi::Service;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Services kept encoded at most (a burst of many changes starts over).
const MAX_KEPT: usize = 1024;

/// Services by address, each with its encoding.
type ByAddress = HashMap<usize, (Arc<Service>, Bytes)>;

/// Encoded services of the newest snapshot version asked about, by address.
/// Each entry holds its service, so an address cannot be reused for
/// another while it is here.
#[derive(Default)]
pub struct Encoded {
    inner: Mutex<(u64, ByAddress)>,
}

impl Encoded {
    /// The `AgentMessage::Delta` frame from `agent` taking a proxy from
    /// `base` to `version` (a snapshot's) by upserting `upsert`, with its
    /// length prefix: written to the stream as it is.
    pub fn delta_frame(
        &self,
        agent: &str,
        base: u64,
        version: u64,
        upsert: &[Arc<Service>],
    ) -> Bytes {
        let parts: Vec<Bytes> = upsert.iter().map(|s| self.service(version, s)).collect();
        mesh_api::syncencode::encode_delta_frame(agent, base, version, &parts, &[])
    }

    fn service(&self, version: u64, s: &Arc<Service>) -> Bytes {
        let key = Arc::as_ptr(s) as usize;
        {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if version > g.0 || g.1.len() >= MAX_KEPT {
                g.1.clear();
                g.0 = g.0.max(version);
            }
            if let Some((_, b)) = g.1.get(&key) {
                return b.clone();
            }
        }
        // Encoded outside the lock; two streams racing both encode, once.
        let b = mesh_api::syncencode::encode_service(s);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.entry(key).or_insert_with(|| (s.clone(), b.clone()));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode;
    use mesh_api::syncapi::{AgentMessage, Endpoint};
    use mesh_api::syncdelta::ViewDelta;

    fn svc(name: &str, ip: &str) -> Arc<Service> {
        Arc::new(Service {
            hostname: format!("{name}.ns.svc.cluster.local"),
            namespace: "ns".into(),
            endpoints: vec![Endpoint {
                address: ip.into(),
                ready: true,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    /// A frame's body, after checking its length prefix.
    fn body(frame: Bytes) -> Bytes {
        use mesh_api::syncframe::PREFIX;
        let len = u32::from_be_bytes(frame[..PREFIX].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - PREFIX, "prefix gives the body's length");
        frame.slice(PREFIX..)
    }

    fn derived(base: u64, version: u64, upsert: &[Arc<Service>]) -> Bytes {
        encode(&AgentMessage::Delta {
            agent: "agent".into(),
            delta: ViewDelta {
                base,
                version,
                upsert: upsert.to_vec(),
                remove: Vec::new(),
            },
        })
    }

    #[test]
    fn streams_at_different_versions_share_one_encoding_of_a_service() {
        let e = Encoded::default();
        let a = svc("a", "10.0.0.1");
        let b = svc("b", "10.0.0.2");
        for base in [3, 5, 9] {
            assert_eq!(
                body(e.delta_frame("agent", base, 10, &[a.clone(), b.clone()])),
                derived(base, 10, &[a.clone(), b.clone()])
            );
        }
        assert_eq!(e.inner.lock().unwrap().1.len(), 2, "each encoded once");
        // The next version: what was encoded for the last one is dropped,
        // and a service changed in place is encoded anew.
        let a2 = svc("a", "10.0.0.9");
        assert_eq!(
            body(e.delta_frame("agent", 10, 11, std::slice::from_ref(&a2))),
            derived(10, 11, &[a2])
        );
        assert_eq!(e.inner.lock().unwrap().1.len(), 1);
        // A version-only delta.
        assert_eq!(
            body(e.delta_frame("agent", 11, 12, &[])),
            derived(11, 12, &[])
        );
    }
}
