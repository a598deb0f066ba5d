//! `mesh-webhook`: Mutating admission webhook that injects the istio-proxy sidecar, and kube-inject.
//!
//! Not built yet: see the open issue for this component.
