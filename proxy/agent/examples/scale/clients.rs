//! The in-process proxies: sync clients (`spawn_client`, the library the
//! sidecar uses) on the benchmark's tokio runtime, and the probe their apply
//! callbacks write to (first view, change markers, the rollout's end,
//! resync after a restart).
//! A leaf: it imports no sibling.

use mesh_agent::client::{Client, ClientConfig};
use mesh_api::syncapi::{ProxyIdentity, ProxyView};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One proxy's observations, written by its apply callback.
#[derive(Default)]
pub struct Slot {
    /// Its first applied view.
    pub first: Option<Instant>,
    /// The change it has seen applied last: (change, when).
    pub marker: Option<(usize, Instant)>,
    /// Hosts it looked up (and the agent found).
    pub wanted: Vec<String>,
    /// After a restart: views newer than this count as the resync.
    pub resync_after: u64,
    pub resync: Option<Instant>,
    /// The first newer view holding every wanted host.
    pub hosts_back: Option<Instant>,
    /// Views applied so far.
    pub applies: u64,
    /// The rollout's services in this proxy's view: (host, the address its
    /// last step gives), and when a view first held all of them.
    pub rollout: Vec<(String, String)>,
    pub rolled: Option<Instant>,
}

/// The change being measured: host, marker IP, change number.
pub type Target = Option<(String, String, usize)>;

/// Every proxy's observations, and the change being measured.
pub struct Probe {
    pub target: RwLock<Target>,
    pub slots: Vec<Mutex<Slot>>,
}

/// The index of `host` in `view`'s (sorted) services.
pub fn has(view: &ProxyView, host: &str) -> Option<usize> {
    view.services
        .binary_search_by(|s| s.hostname.as_str().cmp(host))
        .ok()
}

impl Probe {
    /// A probe for `proxies` proxies, measuring no change yet.
    pub fn new(proxies: usize) -> Probe {
        Probe {
            target: RwLock::new(None),
            slots: (0..proxies).map(|_| Mutex::new(Slot::default())).collect(),
        }
    }

    /// Proxy `i`'s apply callback: notes what `v` shows.
    pub fn apply(&self, i: usize, v: &ProxyView) {
        let now = Instant::now();
        let target = self.target.read().unwrap().clone();
        let mut slot = self.slots[i].lock().unwrap();
        slot.first.get_or_insert(now);
        slot.applies += 1;
        if slot.rolled.is_none()
            && !slot.rollout.is_empty()
            && slot.rollout.iter().all(|(h, ip)| {
                has(v, h).is_some_and(|k| v.services[k].endpoints.iter().any(|e| e.address == *ip))
            })
        {
            slot.rolled = Some(now);
        }
        if let Some((host, ip, change)) = target {
            if slot.marker.map(|m| m.0) != Some(change) {
                if let Some(k) = has(v, &host) {
                    if v.services[k].endpoints.iter().any(|e| e.address == ip) {
                        slot.marker = Some((change, now));
                    }
                }
            }
        }
        if slot.resync_after > 0 && v.version > slot.resync_after {
            slot.resync.get_or_insert(now);
            if slot.hosts_back.is_none() && slot.wanted.iter().all(|h| has(v, h).is_some()) {
                slot.hosts_back = Some(now);
            }
        }
    }

    /// How many proxies' slots satisfy `f`.
    pub fn count(&self, f: impl Fn(&Slot) -> bool) -> usize {
        self.slots.iter().filter(|s| f(&s.lock().unwrap())).count()
    }
}

/// Spawns `proxies` sync clients to the agent at `sync`: proxy `i` is pod
/// `p-i` in namespace `ns-{i % namespaces}`, and its views go to `probe`.
pub fn connect(
    sync: &str,
    proxies: usize,
    namespaces: usize,
    probe: &Arc<Probe>,
    shutdown: &CancellationToken,
) -> Vec<Client> {
    (0..proxies)
        .map(|i| {
            let id = ProxyIdentity {
                pod: format!("p-{i}"),
                namespace: format!("ns-{}", i % namespaces),
                service_account: "default".into(),
                ..Default::default()
            };
            let mut cfg = ClientConfig::new(sync.to_string(), id);
            // Looked-up hosts must stay for the whole run.
            cfg.idle = None;
            let p = probe.clone();
            mesh_agent::client::spawn_client(
                cfg,
                move |v: &ProxyView| {
                    p.apply(i, v);
                    Ok(())
                },
                shutdown.clone(),
            )
        })
        .collect()
}
