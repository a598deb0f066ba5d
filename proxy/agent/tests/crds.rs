//! The checked-in CRDs in manifests/crds/ must match what the types generate.
//! `UPDATE_GOLDEN=1 cargo test -p mesh-agent --test crds` refreshes them.

use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/crds"))
}

#[test]
fn checked_in_crds_are_current() {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        mesh_agent::crdgen::write(&dir()).unwrap();
    }
    let rendered = mesh_agent::crdgen::render().unwrap();
    assert_eq!(
        rendered.len(),
        18,
        "8 Istio kinds, the ServiceMeshControlPlane, MemberRoll and Member, 7 Gateway API kinds"
    );
    let mut stale = Vec::new();
    for (name, body) in &rendered {
        let on_disk = std::fs::read_to_string(dir().join(name)).unwrap_or_default();
        if &on_disk != body {
            stale.push(name.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRDs {stale:?}: run `cargo run -p mesh-agent -- gen-crds` or UPDATE_GOLDEN=1"
    );
}

#[test]
fn crds_serve_all_versions_with_the_storage_version_first() {
    for (name, body) in mesh_agent::crdgen::render().unwrap() {
        let v: serde_json::Value = serde_yaml_ng::from_str(&body).unwrap();
        let versions: Vec<(String, bool)> = v["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["name"].as_str().unwrap().to_string(),
                    x["storage"].as_bool().unwrap(),
                )
            })
            .collect();
        let served = |vs: &[&str]| -> Vec<(String, bool)> {
            vs.iter()
                .enumerate()
                .map(|(i, v)| (v.to_string(), i == 0))
                .collect()
        };
        let expected: Vec<(String, bool)> = if name.starts_with("gatewayclasses.")
            || name.starts_with("gateways.gateway.")
            || name.starts_with("httproutes.")
        {
            served(&["v1", "v1beta1"])
        } else if name.starts_with("grpcroutes.") {
            served(&["v1", "v1alpha2"])
        } else if name.starts_with("referencegrants.") {
            served(&["v1beta1", "v1", "v1alpha2"])
        } else if name.starts_with("tlsroutes.") {
            served(&["v1alpha2", "v1alpha3", "v1"])
        } else if name.starts_with("tcproutes.") {
            served(&["v1alpha2", "v1"])
        } else if name.contains("servicemeshcontrolplanes") {
            vec![("v2".into(), true)]
        } else if name.contains("maistra.io") {
            // OSSM's membership objects exist at v1 only.
            vec![("v1".into(), true)]
        } else if name.contains("security") {
            vec![("v1".into(), true), ("v1beta1".into(), false)]
        } else if name.contains("telemetry") {
            vec![("v1".into(), true), ("v1alpha1".into(), false)]
        } else {
            vec![
                ("v1".into(), true),
                ("v1beta1".into(), false),
                ("v1alpha3".into(), false),
            ]
        };
        assert_eq!(versions, expected, "{name}");
        let spec = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["x-kubernetes-preserve-unknown-fields"], true, "{name}");
    }
}

#[test]
fn gateway_api_crds_have_upstream_names_scope_and_status() {
    let rendered = mesh_agent::crdgen::render().unwrap();
    let get = |file: &str| -> serde_json::Value {
        let (_, body) = rendered.iter().find(|(n, _)| n == file).unwrap();
        serde_yaml_ng::from_str(body).unwrap()
    };
    for (plural, kind, scope, status) in [
        ("gatewayclasses", "GatewayClass", "Cluster", true),
        ("gateways", "Gateway", "Namespaced", true),
        ("httproutes", "HTTPRoute", "Namespaced", true),
        ("grpcroutes", "GRPCRoute", "Namespaced", true),
        ("tlsroutes", "TLSRoute", "Namespaced", true),
        ("tcproutes", "TCPRoute", "Namespaced", true),
        ("referencegrants", "ReferenceGrant", "Namespaced", false),
    ] {
        let v = get(&format!("{plural}.gateway.networking.k8s.io.yaml"));
        assert_eq!(v["spec"]["group"], "gateway.networking.k8s.io", "{plural}");
        assert_eq!(v["spec"]["names"]["kind"], kind, "{plural}");
        assert_eq!(v["spec"]["scope"], scope, "{plural}");
        for ver in v["spec"]["versions"].as_array().unwrap() {
            assert_eq!(
                ver["subresources"]["status"].is_object(),
                status,
                "{plural} {}",
                ver["name"]
            );
        }
    }
    let http = serde_json::to_string(&get("httproutes.gateway.networking.k8s.io.yaml")).unwrap();
    for field in [
        "parentRefs",
        "backendRefs",
        "requestHeaderModifier",
        "urlRewrite",
        "replacePrefixMatch",
        "backendRequest",
    ] {
        assert!(http.contains(field), "HTTPRoute schema misses {field}");
    }
}

#[test]
fn virtual_service_schema_uses_istio_field_names() {
    let (_, body) = mesh_agent::crdgen::render()
        .unwrap()
        .into_iter()
        .find(|(n, _)| n.starts_with("virtualservices."))
        .unwrap();
    for field in [
        "exportTo",
        "mirrorPercentage",
        "perTryTimeout",
        "sniHosts",
        "directResponse",
    ] {
        assert!(body.contains(field), "missing {field}");
    }
}
