//! An "external" service for the egress tests: an unmeshed echo pod
//! `partner-0` in namespace `outside` (no injection), and the `MESH_EXTERNAL`
//! ServiceEntry that registers it as [`HOST`]. Istio's egress tasks start
//! from such a host outside the mesh.

/// The external host the ServiceEntry names.
pub const HOST: &str = "partner.example.com";

/// Namespace `outside` and the unmeshed `partner` Deployment (echo on 8080,
/// `sidecar.istio.io/inject: "false"`): pod `outside/partner-0`.
pub const PARTNER: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: outside}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: partner, namespace: outside}
spec:
  template:
    metadata:
      labels: {app: partner}
      annotations: {sidecar.istio.io/inject: \"false\"}
    spec:
      containers:
      - {name: partner, image: example/partner, ports: [{containerPort: 8080}]}
";

/// The ServiceEntry in `shop` registering [`HOST`] at the partner pod's `ip`
/// (HTTP on 8080, `STATIC`), visible to `export_to` when given.
pub fn service_entry(ip: &str, export_to: Option<&str>) -> String {
    let export = export_to
        .map(|e| format!("  exportTo: [\"{e}\"]\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: partner, namespace: shop}}
spec:
  hosts: [{HOST}]
{export}  addresses: [{ip}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  endpoints:
  - address: {ip}
"
    )
}
