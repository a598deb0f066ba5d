//! `mesh-cni`: the pod capture rules and everything that writes them.
//!
//! - [`rules`]: pure rule builder (redirect parameters -> iptables-restore text), the
//!   same rules as Istio's `istio-iptables`.
//! - [`flags`]: `istio-iptables`-compatible flags for `mesh-cni redirect` (istio-init).
//! - [`redirect`]: `mesh-cni redirect` (what the istio-init container runs).
//! - [`capture`]: a pod's whole capture (both families + TPROXY routing), all or nothing.
//! - [`k8s`]: kubeconfig and a blocking GET of one pod from the API server.
//! - [`iptables`]: applying/removing a rule set atomically and idempotently in the
//!   current network namespace (nft or legacy backend).
//! - [`route`]: TPROXY policy routing over netlink.
//! - [`netns`]: running work inside another network namespace on a dedicated thread.
//! - [`plugin`]: the chained CNI plugin (ADD/DEL/CHECK/STATUS/GC/VERSION).
//! - [`validate`]: `mesh-cni validate` (istio-validation).
//! - [`install`]: `mesh-cni install`, the node DaemonSet installer.

pub mod capture;
pub mod flags;
pub mod install;
pub mod iptables;
pub mod k8s;
pub mod netns;
pub mod nftables;
pub mod plugin;
mod pod_object;
pub mod redirect;
pub mod route;
pub mod rules;
pub mod validate;
