//! `mesh-proxy`: The sidecar data plane.
//!
//! Not built yet: see the open issue for this component.
