//! One passing and one failing case per validation rule; each failing case checks
//! the field path and that the message names the bad value.
//! HTTPRoute's rules are tested in `validate_route_tests.rs`.

use super::{parse, validate};

fn check(kind: &str, spec: &str) -> Vec<(String, String)> {
    let version = super::versions(kind).unwrap()[0];
    let doc = format!(
        "apiVersion: gateway.networking.k8s.io/{version}\nkind: {kind}\nmetadata: {{name: x, namespace: ns}}\nspec: {spec}\n"
    );
    let v: serde_json::Value = serde_yaml_ng::from_str(&doc).unwrap();
    validate(&parse(&v).unwrap().unwrap())
}

/// Asserts `good` yields no findings and `bad` yields one at `path` whose message
/// contains `needle`.
pub(super) fn rule(kind: &str, good: &str, bad: &str, path: &str, needle: &str) {
    assert_eq!(check(kind, good), vec![], "good {kind}: {good}");
    let f = check(kind, bad);
    assert!(
        f.iter().any(|(p, m)| p == path && m.contains(needle)),
        "bad {kind}: {bad}\nwanted {path}: ..{needle}..\ngot {f:#?}"
    );
}

fn gw(listeners: &str) -> String {
    format!("{{gatewayClassName: istio, listeners: {listeners}}}")
}

const HTTP80: &str = "{name: http, port: 80, protocol: HTTP}";

#[test]
fn gateway_listener_names_ports_protocols() {
    rule(
        "Gateway",
        &gw(&format!("[{HTTP80}]")),
        "{gatewayClassName: istio, listeners: []}",
        "spec.listeners",
        "at least 1",
    );
    rule(
        "Gateway",
        &gw(&format!("[{HTTP80}]")),
        &gw("[{name: Web_1, port: 80, protocol: HTTP}]"),
        "spec.listeners[0].name",
        "\"Web_1\"",
    );
    rule(
        "Gateway",
        &gw(&format!(
            "[{HTTP80}, {{name: http2, port: 8080, protocol: HTTP}}]"
        )),
        &gw(&format!(
            "[{HTTP80}, {{name: http, port: 8080, protocol: HTTP}}]"
        )),
        "spec.listeners[1].name",
        "\"http\" is used twice",
    );
    rule(
        "Gateway",
        &gw(&format!("[{HTTP80}]")),
        &gw("[{name: http, port: 70000, protocol: HTTP}]"),
        "spec.listeners[0].port",
        "70000",
    );
    rule(
        "Gateway",
        &gw("[{name: q, port: 80, protocol: example.com/quic}]"),
        &gw("[{name: q, port: 80, protocol: 'h t t p'}]"),
        "spec.listeners[0].protocol",
        "\"h t t p\"",
    );
    rule(
        "Gateway",
        &gw(&format!("[{HTTP80}]")),
        "{gatewayClassName: '', listeners: [{name: a, port: 1, protocol: HTTP}]}",
        "spec.gatewayClassName",
        "required",
    );
}

#[test]
fn gateway_hostnames_and_combinations() {
    rule(
        "Gateway",
        &gw("[{name: a, port: 80, protocol: HTTP, hostname: '*.example.com'}]"),
        &gw("[{name: a, port: 80, protocol: HTTP, hostname: 'foo.*.example.com'}]"),
        "spec.listeners[0].hostname",
        "\"foo.*.example.com\"",
    );
    rule(
        "Gateway",
        &gw("[{name: a, port: 80, protocol: HTTP, hostname: a.example.com}]"),
        &gw("[{name: a, port: 80, protocol: HTTP, hostname: 10.0.0.1}]"),
        "spec.listeners[0].hostname",
        "IP address",
    );
    rule(
        "Gateway",
        &gw("[{name: a, port: 5432, protocol: TCP}]"),
        &gw("[{name: a, port: 5432, protocol: TCP, hostname: db.example.com}]"),
        "spec.listeners[0].hostname",
        "must not be set for protocol TCP",
    );
    rule(
        "Gateway",
        &gw("[{name: a, port: 80, protocol: HTTP, hostname: a.example.com}, {name: b, port: 80, protocol: HTTP, hostname: b.example.com}]"),
        &gw("[{name: a, port: 80, protocol: HTTP, hostname: a.example.com}, {name: b, port: 80, protocol: HTTP, hostname: a.example.com}]"),
        "spec.listeners[1]",
        "port 80, protocol HTTP and hostname \"a.example.com\"",
    );
}

#[test]
fn gateway_tls_rules() {
    let https = "[{name: a, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}]";
    rule(
        "Gateway",
        &gw(https),
        &gw("[{name: a, port: 443, protocol: HTTPS}]"),
        "spec.listeners[0].tls",
        "required for protocol HTTPS",
    );
    rule(
        "Gateway",
        &gw(https),
        &gw("[{name: a, port: 443, protocol: HTTPS, tls: {mode: Terminate}}]"),
        "spec.listeners[0].tls.certificateRefs",
        "Terminate",
    );
    rule(
        "Gateway",
        &gw(&format!("[{HTTP80}]")),
        &gw("[{name: a, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: c}]}}]"),
        "spec.listeners[0].tls",
        "must not be set for protocol HTTP",
    );
    rule(
        "Gateway",
        &gw("[{name: a, port: 443, protocol: TLS, tls: {mode: Passthrough}}]"),
        &gw("[{name: a, port: 443, protocol: HTTPS, tls: {mode: Passthrough}}]"),
        "spec.listeners[0].tls.mode",
        "Passthrough",
    );
}

#[test]
fn gateway_allowed_routes_and_addresses() {
    rule(
        "Gateway",
        &gw("[{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}}]"),
        &gw("[{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}]"),
        "spec.listeners[0].allowedRoutes.namespaces.selector",
        "Selector",
    );
    let addr =
        |a: &str| format!("{{gatewayClassName: istio, listeners: [{HTTP80}], addresses: [{a}]}}");
    rule(
        "Gateway",
        &addr("{value: 10.1.2.3}"),
        &addr("{value: ten.one}"),
        "spec.addresses[0].value",
        "\"ten.one\"",
    );
    rule(
        "Gateway",
        &addr("{type: Hostname, value: lb.example.com}"),
        &addr("{type: Hostname, value: 'lb_1'}"),
        "spec.addresses[0].value",
        "\"lb_1\"",
    );
}

#[test]
fn gateway_class_controller_name() {
    rule(
        "GatewayClass",
        "{controllerName: istio.io/gateway-controller}",
        "{controllerName: gateway-controller}",
        "spec.controllerName",
        "\"gateway-controller\"",
    );
}

pub(super) const BACKEND: &str = "backendRefs: [{name: echo, port: 80}]";

#[test]
fn grpc_route_rules() {
    let r = |m: &str| format!("{{rules: [{{matches: [{m}], {BACKEND}}}]}}");
    rule(
        "GRPCRoute",
        &r("{method: {service: pkg.Echo, method: Ping}}"),
        &r("{method: {}}"),
        "spec.rules[0].matches[0].method",
        "one or both",
    );
    rule(
        "GRPCRoute",
        &r("{method: {service: pkg.Echo}}"),
        &r("{method: {service: 'pkg/Echo'}}"),
        "spec.rules[0].matches[0].method.service",
        "\"pkg/Echo\"",
    );
    rule(
        "GRPCRoute",
        &r("{method: {type: RegularExpression, method: 'Get.*'}}"),
        &r("{method: {type: RegularExpression, method: 'Get[' }}"),
        "spec.rules[0].matches[0].method.method",
        "\"Get[\"",
    );
    rule(
        "GRPCRoute",
        &r("{headers: [{name: x-a, value: b}]}"),
        &r("{headers: [{name: 'x a', value: b}]}"),
        "spec.rules[0].matches[0].headers[0].name",
        "\"x a\"",
    );
    let f = |filters: &str| format!("{{rules: [{{filters: [{filters}]}}]}}");
    rule(
        "GRPCRoute",
        &f("{type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}"),
        &f("{type: RequestMirror, requestHeaderModifier: {remove: [a]}}"),
        "spec.rules[0].filters[0].requestMirror",
        "requires requestMirror",
    );
}

#[test]
fn stream_routes_and_grants() {
    rule(
        "TLSRoute",
        "{hostnames: [db.example.com], rules: [{backendRefs: [{name: db, port: 5432}]}]}",
        "{hostnames: [db.example.com], rules: [{backendRefs: []}]}",
        "spec.rules[0].backendRefs",
        "at least 1",
    );
    rule(
        "TLSRoute",
        "{rules: [{backendRefs: [{name: db, port: 5432}]}]}",
        "{hostnames: ['db.*'], rules: [{backendRefs: [{name: db, port: 5432}]}]}",
        "spec.hostnames[0]",
        "\"db.*\"",
    );
    rule(
        "TCPRoute",
        "{rules: [{backendRefs: [{name: db, port: 5432, weight: 0}]}]}",
        "{rules: [{backendRefs: [{name: db, port: -1}]}]}",
        "spec.rules[0].backendRefs[0].port",
        "-1",
    );
    rule(
        "TCPRoute",
        "{rules: [{backendRefs: [{name: db, port: 1}]}]}",
        "{rules: []}",
        "spec.rules",
        "at least 1",
    );
    rule(
        "ReferenceGrant",
        "{from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: a}], to: [{group: '', kind: Service}]}",
        "{from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: A_1}], to: [{group: '', kind: Service}]}",
        "spec.from[0].namespace",
        "\"A_1\"",
    );
    rule(
        "ReferenceGrant",
        "{from: [{group: '', kind: Gateway, namespace: a}], to: [{group: '', kind: Secret}]}",
        "{from: [{group: '', kind: Gateway, namespace: a}], to: []}",
        "spec.to",
        "at least 1",
    );
}
