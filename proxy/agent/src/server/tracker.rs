//! What each connected proxy was sent and acknowledged, for `/debug/syncz` and
//! `meshctl proxy-status`.

use mesh_api::syncapi::{ProxyIdentity, ProxyStatus};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
struct Record {
    identity: ProxyIdentity,
    sent: Option<u64>,
    acked: Option<u64>,
    nack: Option<(u64, String)>,
    /// Warnings of the view last sent.
    warnings: Arc<Vec<String>>,
}

/// Per-connection records, removed when the connection ends. Hashed: each
/// push and each ack looks its stream's record up among thousands
/// ([`Tracker::statuses`] sorts its rows itself).
#[derive(Debug, Default)]
pub struct Tracker {
    next: AtomicU64,
    records: Mutex<HashMap<u64, Record>>,
}

impl Tracker {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<u64, Record>) -> R) -> R {
        // A panic while holding the lock leaves plain data; keep serving it.
        let mut g = self.records.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Registers a subscribed proxy; `acked` is what it says it already runs.
    pub fn connect(&self, identity: ProxyIdentity, acked: Option<u64>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.with(|m| {
            m.insert(
                id,
                Record {
                    identity,
                    acked,
                    ..Default::default()
                },
            )
        });
        id
    }

    /// Proxies subscribed right now.
    pub fn connected(&self) -> usize {
        self.with(|m| m.len())
    }

    pub fn disconnect(&self, id: u64) {
        self.with(|m| m.remove(&id));
    }

    /// A view without warnings was sent (no allocation for the empty list
    /// unless warnings were shown before).
    pub fn sent(&self, id: u64, version: u64) {
        self.with(|m| {
            if let Some(r) = m.get_mut(&id) {
                r.sent = Some(version);
                if !r.warnings.is_empty() {
                    r.warnings = Arc::default();
                }
            }
        });
    }

    /// [`Tracker::sent`] for a view with problems to show (a gateway's bad
    /// credential), replacing those of the view sent before.
    pub fn sent_with_warnings(&self, id: u64, version: u64, warnings: Arc<Vec<String>>) {
        self.with(|m| {
            if let Some(r) = m.get_mut(&id) {
                r.sent = Some(version);
                r.warnings = warnings;
            }
        });
    }

    pub fn ack(&self, id: u64, version: u64) {
        self.with(|m| {
            if let Some(r) = m.get_mut(&id) {
                r.acked = Some(version);
                if r.nack.as_ref().is_some_and(|(v, _)| *v <= version) {
                    r.nack = None;
                }
            }
        });
    }

    pub fn nack(&self, id: u64, version: u64, reason: String) {
        self.with(|m| {
            if let Some(r) = m.get_mut(&id) {
                r.nack = Some((version, reason));
            }
        });
    }

    /// Rows sorted by namespace and name.
    pub fn statuses(&self, agent: &str) -> Vec<ProxyStatus> {
        let mut rows: Vec<ProxyStatus> = self.with(|m| {
            m.values()
                .map(|r| {
                    let (status, reason) = match (&r.nack, r.sent, r.acked) {
                        (Some((v, why)), Some(s), _) if *v == s => ("ERROR", Some(why.clone())),
                        (_, None, _) => ("NOT SENT", None),
                        (_, Some(s), Some(a)) if a == s => ("SYNCED", None),
                        _ => ("STALE", None),
                    };
                    ProxyStatus {
                        name: r.identity.pod.clone(),
                        namespace: r.identity.namespace.clone(),
                        agent: agent.to_string(),
                        version_sent: r.sent,
                        version_acked: r.acked,
                        status: status.into(),
                        reason,
                        warnings: r.warnings.to_vec(),
                    }
                })
                .collect()
        });
        rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        rows
    }
}
