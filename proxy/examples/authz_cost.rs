//! Per-request cost of the inbound gate's pure parts, measured by hand (not a
//! test): `cargo run --release -p mesh-proxy --example authz_cost`.
//!
//! Compiles a realistic set of AuthorizationPolicies (a mesh-wide DENY, a
//! namespace ALLOW with principals/paths/methods, a header condition, an
//! ipBlocks rule) and times `Authz::evaluate` and path normalization over a mix
//! of allowed and denied requests.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use http::HeaderMap;
use mesh_api::security::AuthorizationPolicySpec;
use mesh_proxy::authz::normalize::{normalize, path_only, PathNormalization};
use mesh_proxy::authz::{Authz, Facts, HttpFacts};

const POLICIES: &[(&str, &str)] = &[
    (
        "istio-system/deny-debug",
        "action: DENY\nrules:\n- to:\n  - operation:\n      paths: [\"/debug*\", \"/admin/*\"]\n",
    ),
    (
        "default/allow-frontend",
        "rules:\n- from:\n  - source:\n      principals: [\"cluster.local/ns/default/sa/frontend\"]\n  - source:\n      namespaces: [\"web\", \"api-*\"]\n  to:\n  - operation:\n      methods: [GET, HEAD]\n      paths: [\"/api/*\", \"/static/*\", \"*.png\"]\n",
    ),
    (
        "default/allow-token",
        "rules:\n- to:\n  - operation:\n      methods: [POST]\n  when:\n  - key: request.headers[x-api-key]\n    values: [\"key-*\"]\n    notValues: [\"key-revoked\"]\n",
    ),
    (
        "default/allow-internal",
        "rules:\n- from:\n  - source:\n      ipBlocks: [\"10.88.0.0/16\", \"192.168.0.0/24\"]\n      notIpBlocks: [\"10.88.9.9\"]\n  to:\n  - operation:\n      ports: [\"8080\"]\n",
    ),
];

fn main() {
    let map: BTreeMap<String, AuthorizationPolicySpec> = POLICIES
        .iter()
        .map(|(k, y)| (k.to_string(), serde_yaml_ng::from_str(y).unwrap()))
        .collect();
    let authz = Authz::compile(map.iter());
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", "key-123".parse().unwrap());
    headers.insert("user-agent", "curl/8".parse().unwrap());
    let reqs = [
        (
            "GET",
            "/api/v1/items?page=2",
            "cluster.local/ns/default/sa/frontend",
            "10.77.0.3",
        ),
        (
            "POST",
            "/api/v1/items",
            "cluster.local/ns/x/sa/y",
            "172.16.0.1",
        ),
        (
            "GET",
            "/static/../debug/vars",
            "cluster.local/ns/web/sa/a",
            "10.88.0.3",
        ),
        (
            "DELETE",
            "/api/v1/items/7",
            "cluster.local/ns/other/sa/b",
            "172.16.0.9",
        ),
    ];
    let n = 1_000_000u32;
    let normalized: Vec<String> = reqs
        .iter()
        .map(|r| {
            normalize(r.1, PathNormalization::MergeSlashes)
                .unwrap()
                .into_owned()
        })
        .collect();
    let facts: Vec<Facts> = reqs
        .iter()
        .zip(&normalized)
        .map(|((method, _, principal, src), path)| {
            let ip = src.parse().unwrap();
            Facts {
                source_ip: ip,
                remote_ip: ip,
                destination_ip: "10.88.0.5".parse().unwrap(),
                destination_port: 8080,
                principal: Some(principal),
                namespace: principal.split('/').nth(2),
                sni: None,
                http: Some(HttpFacts {
                    method,
                    path: path_only(path),
                    host: "reviews.default.svc.cluster.local:9080",
                    headers: &headers,
                }),
            }
        })
        .collect();
    let mut allowed = 0u32;
    let t = Instant::now();
    for i in 0..n {
        allowed +=
            black_box(authz.evaluate(black_box(&facts[(i % 4) as usize]))).is_allowed() as u32;
    }
    let eval = t.elapsed();
    let t = Instant::now();
    for i in 0..n {
        let (_, target, _, _) = reqs[(i % 4) as usize];
        black_box(normalize(black_box(target), PathNormalization::MergeSlashes).unwrap());
    }
    let norm_only = t.elapsed();
    println!(
        "{} policies, {n} requests ({allowed} allowed): evaluate {:.0} ns/request, path normalization {:.0} ns/request (mix: 3 of 4 paths need no work)",
        POLICIES.len(),
        eval.as_nanos() as f64 / n as f64,
        norm_only.as_nanos() as f64 / n as f64,
    );
}
