//! The synthetic mesh the benchmark serves: one YAML file per Service (with
//! its EndpointSlice, and for the first services a VirtualService and a
//! DestinationRule), the hosts proxies look up, and the EndpointSlices the
//! change series and the rollout write. A leaf: it imports no sibling.

use std::fmt::Write as _;
use std::path::Path;

pub const ENDPOINTS_PER_SERVICE: usize = 10;

pub fn host(i: usize, namespaces: usize) -> String {
    format!("svc-{i}.ns-{}.svc.cluster.local", i % namespaces)
}

/// Service `i`'s endpoint addresses as the mesh is written.
pub fn addresses(i: usize) -> Vec<String> {
    (0..ENDPOINTS_PER_SERVICE)
        .map(|e| {
            let ip = i * ENDPOINTS_PER_SERVICE + e;
            format!("10.{}.{}.{}", 1 + ip / 65536, (ip / 256) % 256, ip % 256)
        })
        .collect()
}

/// Service `i` (bench.rs's shapes): Service + EndpointSlice, and a
/// VirtualService with a DestinationRule when `vs`. `marker` replaces the
/// first endpoint's address.
pub fn service_yaml(i: usize, namespaces: usize, vs: bool, marker: Option<&str>) -> String {
    let mut addrs = addresses(i);
    if let Some(m) = marker {
        addrs[0] = m.to_string();
    }
    service_yaml_with(i, namespaces, vs, &addrs)
}

/// [`service_yaml`] with the EndpointSlice's addresses given, one endpoint
/// each (a rollout step replaces some of them).
pub fn service_yaml_with(i: usize, namespaces: usize, vs: bool, addrs: &[String]) -> String {
    let ns = format!("ns-{}", i % namespaces);
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  clusterIP: 10.96.{}.{}\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: grpc-api, port: 9090}}]\n---\n",
        i / 250,
        i % 250
    );
    write!(y, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: grpc-api, port: 9090}}]\nendpoints:\n").unwrap();
    for (e, addr) in addrs.iter().enumerate() {
        writeln!(
            y,
            "- addresses: [{addr}]\n  conditions: {{ready: true}}\n  zone: zone-{}",
            e % 3
        )
        .unwrap();
    }
    if vs {
        write!(y, "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  hosts: [svc-{i}]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}, {{uri: {{regex: \"/api/v[0-9]+/.*\"}}}}]\n    route: [{{destination: {{host: svc-{i}, subset: v2}}}}]\n  - route:\n    - {{destination: {{host: svc-{i}, subset: v1}}, weight: 90}}\n    - {{destination: {{host: svc-{i}, subset: v2}}, weight: 10}}\n    timeout: 3s\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  host: svc-{i}\n  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n").unwrap();
    }
    y
}

/// Writes the mesh into `dir`, one file per service.
pub fn write_mesh(dir: &Path, services: usize, namespaces: usize, vs: usize) {
    for i in 0..services {
        std::fs::write(
            dir.join(format!("svc-{i}.yaml")),
            service_yaml(i, namespaces, i < vs, None),
        )
        .unwrap();
    }
}

/// The services proxy `i` looks up: `n` of other namespaces, spread so the
/// whole mesh gets looked up.
pub fn lookups_of(i: usize, n: usize, services: usize, namespaces: usize) -> Vec<usize> {
    (0..n)
        .map(|m| {
            let mut j = (i * n + m) % services;
            while namespaces > 1 && j % namespaces == i % namespaces {
                j = (j + 1) % services;
            }
            j
        })
        .collect()
}
