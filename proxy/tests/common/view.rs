//! The view file the proxies read instead of an agent's stream, and the
//! Service entries the tests put in it. A leaf: the other parts of the
//! fixture write views, none of them is needed to make one.

use mesh_api::syncapi::{Endpoint, ProxyView, Service, ServicePort};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// A world-readable folder for the view file (the proxy runs as 1337).
pub struct ViewDir(pub PathBuf);

impl ViewDir {
    pub fn new() -> ViewDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mesh-proxy-e2e-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        ViewDir(p)
    }
    /// Writes a view atomically (temp file + rename), as a config source must.
    pub fn write(&self, view: &ProxyView) -> PathBuf {
        let path = self.0.join("view.json");
        let tmp = self.0.join(".view.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(view).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for ViewDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn svc(
    host: &str,
    vip: &str,
    port: u16,
    name: &str,
    protocol: &str,
    eps: &[(IpAddr, &str)],
) -> Service {
    Service {
        hostname: host.into(),
        namespace: "default".into(),
        origin: "Kubernetes".into(),
        addresses: vec![vip.into()],
        ports: vec![ServicePort {
            name: name.into(),
            port,
            target_port: Some(port),
            protocol: protocol.into(),
        }],
        endpoints: eps
            .iter()
            .map(|(ip, version)| Endpoint {
                address: ip.to_string(),
                // The pods run sidecars: their endpoints say so, as injected pods' do.
                labels: BTreeMap::from([
                    ("app".into(), "echo".into()),
                    ("version".into(), version.to_string()),
                    ("security.istio.io/tlsMode".into(), "istio".into()),
                ]),
                ready: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
