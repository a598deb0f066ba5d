//! Parsing tests: every kind from YAML as users write it, defaults, versions, keys.

use super::*;
use crate::resource::ParseError;

fn yaml(s: &str) -> serde_json::Value {
    serde_yaml_ng::from_str(s).unwrap()
}

fn parse_ok(s: &str) -> GatewayApiResource {
    parse(&yaml(s)).unwrap().unwrap()
}

#[test]
fn gateway_parses_with_defaults_and_collision_free_key() {
    let r = parse_ok(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: https
    hostname: "*.example.com"
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs: [{name: example-cert}]
    allowedRoutes:
      namespaces: {from: All}
      kinds: [{kind: HTTPRoute}]
  - name: http
    port: 80
    protocol: HTTP
  addresses: [{value: 10.0.0.1}]
  futureField: kept
"#,
    );
    assert_eq!(
        r.key(),
        ResourceKey {
            kind: GATEWAY_KEY_KIND.into(),
            namespace: "infra".into(),
            name: "edge".into()
        }
    );
    let GatewayApiResource::Gateway(g) = r else {
        panic!()
    };
    let l = &g.spec.listeners[0];
    let tls = l.tls.as_ref().unwrap();
    assert_eq!(tls.mode, gateway::TlsMode::Terminate);
    assert_eq!(tls.certificate_refs[0].kind, "Secret");
    assert_eq!(tls.certificate_refs[0].group, "");
    let ar = l.allowed_routes.as_ref().unwrap();
    assert_eq!(ar.namespaces.from, gateway::FromNamespaces::All);
    assert_eq!(ar.kinds[0].group, GROUP);
    assert_eq!(g.spec.addresses[0].type_, "IPAddress");
    assert_eq!(g.spec.extra["futureField"], "kept");
    assert!(g.spec.listeners[1].allowed_routes.is_none());
}

#[test]
fn httproute_defaults_are_explicit() {
    let r = parse_ok(
        r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: edge, namespace: infra, sectionName: https}, {group: "", kind: Service, name: echo, port: 80}]
  hostnames: [www.example.com]
  rules:
  - backendRefs: [{name: echo, port: 80}]
  - matches:
    - headers: [{name: x-canary, value: "1"}]
    - path: {type: Exact, value: /login}
      method: POST
      queryParams: [{type: RegularExpression, name: v, value: "2.*"}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https}
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs:
    - name: echo-v2
      port: 8080
      weight: 90
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-v, value: "2"}], remove: [x-old]}}]
    timeouts: {request: 10s, backendRequest: 2s}
    retry: {codes: [503], attempts: 3, backoff: 100ms}
"#,
    );
    assert_eq!(r.key().kind, "HTTPRoute");
    assert_eq!(r.key().namespace, "default");
    let GatewayApiResource::HTTPRoute(h) = r else {
        panic!()
    };
    let s = &h.spec;
    assert_eq!(s.parent_refs[0].kind, "Gateway");
    assert_eq!(s.parent_refs[0].group, GROUP);
    assert!(!s.parent_refs[0].is_service());
    assert!(s.parent_refs[1].is_service());
    // Rule without matches: one PathPrefix "/" match.
    assert_eq!(s.rules[0].matches.len(), 1);
    assert_eq!(
        s.rules[0].matches[0].path.type_,
        httproute::PathMatchType::PathPrefix
    );
    assert_eq!(s.rules[0].matches[0].path.value, "/");
    assert_eq!(s.rules[0].backend_refs[0].backend.weight, 1);
    assert_eq!(s.rules[0].backend_refs[0].backend.kind, "Service");
    let r1 = &s.rules[1];
    assert_eq!(r1.matches[0].path.value, "/");
    assert_eq!(r1.matches[0].headers[0].type_, HeaderMatchType::Exact);
    assert_eq!(r1.matches[1].path.type_, httproute::PathMatchType::Exact);
    assert_eq!(
        r1.filters[0].request_redirect.as_ref().unwrap().status_code,
        302
    );
    assert_eq!(
        r1.filters[1].type_,
        httproute::HTTPRouteFilterType::URLRewrite
    );
    let b = &r1.backend_refs[0];
    assert_eq!(b.backend.weight, 90);
    assert_eq!(b.object().name, "echo-v2");
    assert_eq!(
        b.filters[0]
            .request_header_modifier
            .as_ref()
            .unwrap()
            .remove,
        vec!["x-old".to_string()]
    );
    assert_eq!(
        r1.timeouts.as_ref().unwrap().backend_request.as_deref(),
        Some("2s")
    );
    assert_eq!(r1.retry.as_ref().unwrap().attempts, Some(3));
}

#[test]
fn route_without_rules_gets_the_default_rule() {
    let r = parse_ok(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {parentRefs: [{name: g}]}\n",
    );
    let GatewayApiResource::HTTPRoute(h) = r else {
        panic!()
    };
    assert_eq!(h.spec.rules.len(), 1);
    assert_eq!(h.spec.rules[0].matches[0].path.value, "/");
}

#[test]
fn grpc_tls_tcp_grant_and_class_parse() {
    let g = parse_ok(
        r#"
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: GRPCRoute
metadata: {name: grpc, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Ping}}]
    backendRefs: [{name: echo, port: 9000}]
"#,
    );
    let GatewayApiResource::GRPCRoute(g) = g else {
        panic!()
    };
    let m = g.spec.rules[0].matches[0].method.as_ref().unwrap();
    assert_eq!(m.type_, grpcroute::GRPCMethodMatchType::Exact);
    assert_eq!(m.service.as_deref(), Some("echo.Echo"));

    let t = parse_ok(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: t}\nspec: {hostnames: [db.example.com], rules: [{backendRefs: [{name: db, port: 5432}]}]}\n",
    );
    assert_eq!(t.kind(), "TLSRoute");
    let c = parse_ok(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: t}\nspec: {rules: [{backendRefs: [{name: db, port: 5432, weight: 0}]}]}\n",
    );
    let GatewayApiResource::TCPRoute(c) = c else {
        panic!()
    };
    assert_eq!(c.spec.rules[0].backend_refs[0].weight, 0);

    let rg = parse_ok(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: rg, namespace: b}\nspec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: a}], to: [{group: '', kind: Service}]}\n",
    );
    assert_eq!(rg.key().namespace, "b");

    let gc = parse_ok(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: istio, namespace: ignored}\nspec: {controllerName: istio.io/gateway-controller}\n",
    );
    assert_eq!(
        gc.key(),
        ResourceKey {
            kind: "GatewayClass".into(),
            namespace: String::new(),
            name: "istio".into()
        }
    );
}

#[test]
fn other_groups_and_unknown_kinds_are_not_ours() {
    let istio = yaml("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n");
    assert_eq!(parse(&istio), Ok(None));
    let udp = yaml(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: u}\n",
    );
    assert_eq!(parse(&udp), Ok(None));
}

#[test]
fn unserved_version_names_the_accepted_ones() {
    let v = yaml(
        "apiVersion: gateway.networking.k8s.io/v1alpha1\nkind: HTTPRoute\nmetadata: {name: r}\n",
    );
    let e = parse(&v).unwrap_err();
    assert_eq!(
        e,
        ParseError::Version {
            kind: "HTTPRoute".into(),
            name: "r".into(),
            api_version: "gateway.networking.k8s.io/v1alpha1".into(),
            accepted: "gateway.networking.k8s.io/v1, gateway.networking.k8s.io/v1beta1".into(),
        }
    );
}

#[test]
fn malformed_field_names_its_path() {
    let v = yaml(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {rules: [{matches: [{path: {type: Prefix}}]}]}\n",
    );
    let e = parse(&v).unwrap_err();
    let ParseError::Field { path, message, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(path, "spec.rules[0].matches[0].path.type");
    assert!(message.contains("Prefix"), "{message}");
}
