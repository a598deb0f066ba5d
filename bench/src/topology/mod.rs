//! One variant's pods on the shared node: client and server pod with `mesh-cni redirect` rules,
//! the app, a sidecar in each unless `direct`; plus the mTLS variants' mesh CA. `variant` is the
//! pure description, `pods` the steps [`crate::gateway`] reuses, `deployment` their assembly.

mod deployment;
mod pods;
mod variant;

pub use crate::certs::write_readable;
pub use crate::ports::{Ports, HOST, PORTS};

pub use deployment::{Deployment, MeshCa};
pub(crate) use pods::{
    counted, redirect, resolve_pids, start_app, start_envoy, start_envoy_sidecar, start_mesh_proxy,
    wait_http_ok, TempDir,
};
pub(crate) use variant::view;
pub use variant::{Bins, Variant, APP_UID, PROXY_UID, VIP};
