//! `mesh-cni`: Redirect rules, istio-init, and the chained CNI plugin with its node installer.
//!
//! Not built yet: see the open issue for this component.
