//! The Gateway API conformance suite's core HTTP and mesh (GAMMA) profiles,
//! ported as scenarios (not code) to `meshctl local`: one local mesh carries the
//! suite's base infrastructure (`gateway-api/base.yaml`: backend namespaces,
//! infra backends, three Gateways of class `istio` whose `<gateway>-istio` pods
//! run locally with published ports, mesh echo v1/v2 and clients); each
//! scenario applies its own objects (`gateway-api/<scenario>.yaml`, our YAML),
//! sends its requests — from the host through the Gateway's published port for
//! ingress, from a client pod for mesh — and reads statuses with `meshctl local
//! status`, polling (bounded) until the expected answer, then deletes its
//! objects. The test prints one line per upstream test (profile, name, result),
//! the pass count per profile, and fails unless every scenario it runs passes.
//!
//! This file holds the scenario table and the runner; the scenarios live in
//! `http.rs` (HTTPRoute), `gateway.rs` (Gateway status), `tls.rs` and `mesh.rs`
//! (GAMMA), all built on the leaf modules `env.rs` (the shared [`Env`]) and
//! `checks.rs` (shared checks), which import no scenario file.

#[path = "../common/mod.rs"]
mod common;

mod checks;
mod env;
mod gateway;
mod http;
mod mesh;
mod tls;

use checks::until;
use common::{certs, text, Local};
use env::{Check, Env};
use std::time::{Duration, Instant};

struct Scenario {
    profile: &'static str,
    /// The upstream test's ShortName.
    name: &'static str,
    files: &'static [&'static str],
    check: fn(&Env) -> Check,
}

const HTTP: &str = "GATEWAY-HTTP";
const MESH: &str = "MESH-HTTP";

const SCENARIOS: &[Scenario] = &[
    Scenario {
        profile: HTTP,
        name: "HTTPRouteSimpleSameNamespace",
        files: &["simple-same-namespace.yaml"],
        check: http::simple_same_namespace,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteCrossNamespace",
        files: &["cross-namespace.yaml"],
        check: http::cross_namespace,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteExactPathMatching",
        files: &["exact-path-matching.yaml"],
        check: http::exact_path_matching,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteMatching",
        files: &["matching.yaml"],
        check: http::matching,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteMatchingAcrossRoutes",
        files: &["matching-across-routes.yaml"],
        check: http::matching_across_routes,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteHeaderMatching",
        files: &["header-matching.yaml"],
        check: http::header_matching,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteHostnameIntersection",
        files: &["hostname-intersection.yaml"],
        check: http::hostname_intersection,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteListenerHostnameMatching",
        files: &["listener-hostname-matching.yaml"],
        check: http::listener_hostname_matching,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteRequestHeaderModifier",
        files: &["request-header-modifier.yaml"],
        check: http::request_header_modifier,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteWeight",
        files: &["weight.yaml"],
        check: http::weight,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteInvalidNonExistentBackendRef",
        files: &["invalid-nonexistent-backend.yaml"],
        check: http::invalid_nonexistent,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteInvalidBackendRefUnknownKind",
        files: &["invalid-backend-kind.yaml"],
        check: http::invalid_kind,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteInvalidCrossNamespaceBackendRef",
        files: &["invalid-cross-namespace-backend.yaml"],
        check: http::invalid_cross_ns_backend,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteReferenceGrant",
        files: &["reference-grant.yaml"],
        check: http::reference_grant,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteInvalidCrossNamespaceParentRef",
        files: &["invalid-cross-namespace-parent.yaml"],
        check: http::invalid_cross_namespace_parent,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteDisallowedKind",
        files: &["disallowed-kind.yaml"],
        check: http::disallowed_kind,
    },
    Scenario {
        profile: HTTP,
        name: "GatewayInvalidRouteKind",
        files: &["invalid-route-kind.yaml"],
        check: gateway::invalid_route_kind,
    },
    Scenario {
        profile: HTTP,
        name: "GatewaySecretMissingReferenceGrant",
        files: &["secret-missing-reference-grant.yaml"],
        check: tls::secret_missing_reference_grant,
    },
    Scenario {
        profile: HTTP,
        name: "GatewaySecretReferenceGrantSpecific",
        files: &["secret-reference-grant-specific.yaml"],
        check: tls::secret_reference_grant_specific,
    },
    Scenario {
        profile: HTTP,
        name: "GatewayInvalidTLSConfiguration",
        files: &["invalid-tls-configuration.yaml"],
        check: tls::invalid_tls_configuration,
    },
    Scenario {
        profile: HTTP,
        name: "GatewayWithAttachedRoutes",
        files: &["attached-routes.yaml"],
        check: gateway::attached_routes,
    },
    Scenario {
        profile: HTTP,
        name: "GatewayObservedGenerationBump",
        files: &["observed-generation-bump.yaml"],
        check: gateway::observed_generation_bump,
    },
    Scenario {
        profile: HTTP,
        name: "HTTPRouteHTTPSListener",
        files: &["https-listener.yaml"],
        check: tls::https_listener,
    },
    Scenario {
        profile: MESH,
        name: "MeshBasic",
        files: &[],
        check: mesh::mesh_basic,
    },
    Scenario {
        profile: MESH,
        name: "MeshHTTPRouteSimpleSameNamespace",
        files: &["mesh-simple-same-namespace.yaml"],
        check: mesh::mesh_simple,
    },
    Scenario {
        profile: MESH,
        name: "MeshHTTPRouteMatching",
        files: &["mesh-matching.yaml"],
        check: mesh::mesh_matching,
    },
    Scenario {
        profile: MESH,
        name: "MeshHTTPRouteWeight",
        files: &["mesh-weight.yaml"],
        check: mesh::mesh_weight,
    },
    Scenario {
        profile: MESH,
        name: "MeshConsumerRoute",
        files: &["mesh-consumer-route.yaml"],
        check: mesh::mesh_consumer_route,
    },
    Scenario {
        profile: MESH,
        name: "MeshFrontend",
        files: &["mesh-frontend.yaml"],
        check: mesh::mesh_frontend,
    },
];

#[test]
fn gateway_api_conformance_core_http_and_mesh() {
    let mesh = Local::new();
    let (ca, cert, key) = certs("gateway-conformance-ca", "example.org");
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let env = Env {
        ca: mesh.file("ca.pem", &ca),
        cert_b64: b64(&cert),
        key_b64: b64(&key),
        mesh,
    };
    let base = env.data("base.yaml");
    env.mesh.ok(&["up", "-f", &base]);

    let only = std::env::var("GWCONF_ONLY").ok();
    let mut results: Vec<(&str, &str, Result<(), String>, Duration)> = Vec::new();
    for s in SCENARIOS {
        if only.as_deref().is_some_and(|o| !s.name.contains(o)) {
            continue;
        }
        let started = Instant::now();
        let files: Vec<String> = s.files.iter().map(|f| env.data(f)).collect();
        let mut args = vec!["apply"];
        for f in &files {
            args.extend(["-f", f.as_str()]);
        }
        let res = if files.is_empty() {
            until(|| (s.check)(&env))
        } else {
            let out = env.mesh.meshctl(&args);
            if out.status.success() {
                until(|| (s.check)(&env))
            } else {
                Err(format!("apply refused: {}", text(&out)))
            }
        };
        if !files.is_empty() {
            args[0] = "delete";
            env.mesh.ok(&args);
        }
        println!(
            "{:<12} {:<44} {}",
            s.profile,
            s.name,
            if res.is_ok() { "pass" } else { "FAIL" }
        );
        results.push((s.profile, s.name, res, started.elapsed()));
    }
    println!("\nprofile       passed / listed");
    for p in [HTTP, MESH] {
        let listed = results.iter().filter(|r| r.0 == p).count();
        let passed = results.iter().filter(|r| r.0 == p && r.2.is_ok()).count();
        println!("{p:<12}  {passed} / {listed}");
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(p, n, r, t)| r.as_ref().err().map(|e| format!("{p} {n} ({t:?}): {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
}
