//! `mesh-agent`: The config-sync agent: Istio config in, per-proxy snapshots out.
//!
//! Not built yet: see the open issue for this component.
