//! What changed between two snapshots when only services did
//! ([`SnapshotChange`], [`Reach`]): the data only. Its own file because a
//! [`super::Snapshot`] holds its change, while `change.rs` computes
//! changes from snapshots.

use std::collections::{BTreeMap, BTreeSet};

/// From which proxy namespaces a changed host can be part of a namespace-scoped
/// view (on-demand hosts and Sidecars are checked by the stream itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The root namespace's services, and anything where unsure.
    All,
    Namespaces(BTreeSet<String>),
}

impl Reach {
    pub fn admits(&self, ns: &str) -> bool {
        match self {
            Reach::All => true,
            Reach::Namespaces(n) => n.contains(ns),
        }
    }
}

/// Snapshot `prev_version` → this one: only these services differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChange {
    pub prev_version: u64,
    /// Changed, added or removed hosts. A removed host reaches no namespace:
    /// it matters only to views that still have it.
    pub hosts: BTreeMap<String, Reach>,
    /// Every changed host is in both snapshots and differs only in its
    /// endpoints (and the identities they run as): no view gains or loses a
    /// service, so a view that has one of them is patched, not rebuilt, and
    /// a proxy whose view has none of them is not even woken.
    pub endpoints_only: bool,
}
