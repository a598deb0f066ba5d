//! One passing and one failing case per validation rule; each failing case checks
//! the field path and that the message names the bad value.

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
fn rule(kind: &str, good: &str, bad: &str, path: &str, needle: &str) {
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

fn route(rule_yaml: &str) -> String {
    format!("{{parentRefs: [{{name: gw}}], rules: [{{{rule_yaml}}}]}}")
}

const BACKEND: &str = "backendRefs: [{name: echo, port: 80}]";

#[test]
fn route_parents_hostnames_backends() {
    rule(
        "HTTPRoute",
        &route(BACKEND),
        "{parentRefs: [{name: ''}]}",
        "spec.parentRefs[0].name",
        "required",
    );
    rule(
        "HTTPRoute",
        &route(BACKEND),
        "{parentRefs: [{name: gw, port: 0}]}",
        "spec.parentRefs[0].port",
        "port 0",
    );
    rule(
        "HTTPRoute",
        &route(BACKEND),
        "{parentRefs: [{name: gw}, {name: gw}]}",
        "spec.parentRefs[1]",
        "\"gw\" is listed twice",
    );
    rule(
        "HTTPRoute",
        "{hostnames: ['*.example.com']}",
        "{hostnames: ['*']}",
        "spec.hostnames[0]",
        "\"*\"",
    );
    rule(
        "HTTPRoute",
        "{hostnames: [a.example.com]}",
        "{hostnames: [A.Example.com]}",
        "spec.hostnames[0]",
        "\"A.Example.com\"",
    );
    let many = (0..17)
        .map(|i| format!("h{i}.example.com"))
        .collect::<Vec<_>>()
        .join(", ");
    rule(
        "HTTPRoute",
        "{hostnames: [a.b]}",
        &format!("{{hostnames: [{many}]}}"),
        "spec.hostnames",
        "17 items",
    );
    rule(
        "HTTPRoute",
        &route("backendRefs: [{name: echo, port: 80, weight: 1000000}]"),
        &route("backendRefs: [{name: echo, port: 80, weight: 1000001}]"),
        "spec.rules[0].backendRefs[0].weight",
        "1000001",
    );
    rule(
        "HTTPRoute",
        &route("backendRefs: [{name: svc, kind: ServiceImport, group: multicluster.x-k8s.io}]"),
        &route("backendRefs: [{name: echo}]"),
        "spec.rules[0].backendRefs[0].port",
        "\"echo\"",
    );
}

#[test]
fn route_rule_counts_and_names() {
    let rules = |n: usize| {
        (0..n)
            .map(|_| format!("{{{BACKEND}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rule(
        "HTTPRoute",
        &format!("{{rules: [{}]}}", rules(16)),
        &format!("{{rules: [{}]}}", rules(17)),
        "spec.rules",
        "17 items",
    );
    rule(
        "HTTPRoute",
        "{rules: [{name: a}, {name: b}]}",
        "{rules: [{name: a}, {name: a}]}",
        "spec.rules[1].name",
        "\"a\" is used twice",
    );
    let matches = |n: usize| {
        (0..n)
            .map(|i| format!("{{path: {{value: /p{i}}}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rule(
        "HTTPRoute",
        &route(&format!("matches: [{}]", matches(64))),
        &route(&format!("matches: [{}]", matches(65))),
        "spec.rules[0].matches",
        "65 items",
    );
    let four = |n: usize| {
        format!(
            "{{rules: [{}]}}",
            (0..4)
                .map(|_| format!("{{matches: [{}]}}", matches(n)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    rule(
        "HTTPRoute",
        &four(32),
        &four(33),
        "spec.rules",
        "132 matches",
    );
}

#[test]
fn route_path_header_query_method() {
    rule(
        "HTTPRoute",
        &route("matches: [{path: {type: Exact, value: /a/b}}]"),
        &route("matches: [{path: {type: Exact, value: a/b}}]"),
        "spec.rules[0].matches[0].path.value",
        "\"a/b\" must start with '/'",
    );
    rule(
        "HTTPRoute",
        &route("matches: [{path: {value: /a}}]"),
        &route("matches: [{path: {value: /a//b}}]"),
        "spec.rules[0].matches[0].path.value",
        "\"/a//b\"",
    );
    rule(
        "HTTPRoute",
        &route("matches: [{path: {value: /a}}]"),
        &route("matches: [{path: {value: '/a b'}}]"),
        "spec.rules[0].matches[0].path.value",
        "character",
    );
    rule(
        "HTTPRoute",
        &route("matches: [{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}]"),
        &route("matches: [{path: {type: RegularExpression, value: '/v[0-9'}}]"),
        "spec.rules[0].matches[0].path.value",
        "\"/v[0-9\" is not a valid regular expression",
    );
    rule(
        "HTTPRoute",
        &route("matches: [{headers: [{name: x-user, value: a}]}]"),
        &route("matches: [{headers: [{name: ':authority', value: a}]}]"),
        "spec.rules[0].matches[0].headers[0].name",
        "\":authority\"",
    );
    rule(
        "HTTPRoute",
        &route("matches: [{headers: [{name: a, value: x}, {name: b, value: y}]}]"),
        &route("matches: [{headers: [{name: a, value: x}, {name: A, value: y}]}]"),
        "spec.rules[0].matches[0].headers[1].name",
        "\"A\" is matched twice",
    );
    rule(
        "HTTPRoute",
        &route("matches: [{headers: [{type: RegularExpression, name: a, value: 'x.*'}]}]"),
        &route("matches: [{headers: [{type: RegularExpression, name: a, value: '(x'}]}]"),
        "spec.rules[0].matches[0].headers[0].value",
        "\"(x\"",
    );
    rule(
        "HTTPRoute",
        &route("matches: [{queryParams: [{name: v, value: '1'}]}]"),
        &route("matches: [{queryParams: [{name: v, value: '1'}, {name: v, value: '2'}]}]"),
        "spec.rules[0].matches[0].queryParams[1].name",
        "\"v\"",
    );
    rule(
        "HTTPRoute",
        &route("matches: [{method: PATCH}]"),
        &route("matches: [{method: FETCH}]"),
        "spec.rules[0].matches[0].method",
        "\"FETCH\"",
    );
}

#[test]
fn route_filters() {
    let f = |filters: &str| route(&format!("filters: [{filters}]"));
    rule("HTTPRoute", &f("{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-a, value: '1'}]}}"), &f("{type: RequestHeaderModifier}"), "spec.rules[0].filters[0].requestHeaderModifier", "requires requestHeaderModifier");
    rule("HTTPRoute", &f("{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-a]}}"), &f("{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-a]}, urlRewrite: {hostname: a.b}}"), "spec.rules[0].filters[0].urlRewrite", "must not be set for filter type RequestHeaderModifier");
    rule("HTTPRoute", &f("{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}]}}"), &f("{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: 'a b', value: b}]}}"), "spec.rules[0].filters[0].requestHeaderModifier.set[0].name", "\"a b\"");
    rule("HTTPRoute", &f("{type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}"), &f("{type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}, {type: RequestHeaderModifier, requestHeaderModifier: {remove: [b]}}"), "spec.rules[0].filters[1].type", "repeated");
    rule("HTTPRoute", &f("{type: URLRewrite, urlRewrite: {hostname: a.b}}"), &f("{type: URLRewrite, urlRewrite: {hostname: a.b}}, {type: RequestRedirect, requestRedirect: {scheme: https}}"), "spec.rules[0].filters", "must not be used together");
    rule(
        "HTTPRoute",
        &f("{type: RequestRedirect, requestRedirect: {statusCode: 308}}"),
        &f("{type: RequestRedirect, requestRedirect: {statusCode: 304}}"),
        "spec.rules[0].filters[0].requestRedirect.statusCode",
        "304",
    );
    rule(
        "HTTPRoute",
        &f("{type: RequestRedirect, requestRedirect: {scheme: https}}"),
        &f("{type: RequestRedirect, requestRedirect: {scheme: ftp}}"),
        "spec.rules[0].filters[0].requestRedirect.scheme",
        "\"ftp\"",
    );
    rule(
        "HTTPRoute",
        &f("{type: RequestRedirect, requestRedirect: {port: 8443}}"),
        &route(&format!(
            "{BACKEND}, filters: [{{type: RequestRedirect, requestRedirect: {{port: 8443}}}}]"
        )),
        "spec.rules[0].backendRefs",
        "RequestRedirect",
    );
    rule(
        "HTTPRoute",
        &route("matches: [{path: {value: /old}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]"),
        &route("matches: [{path: {type: Exact, value: /old}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]"),
        "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch",
        "exactly one match",
    );
    rule("HTTPRoute", &f("{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /x}}}"), &f("{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /x}}}"), "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath", "required");
    rule(
        "HTTPRoute",
        &f("{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 50}}"),
        &f("{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 150}}"),
        "spec.rules[0].filters[0].requestMirror.percent",
        "150",
    );
    rule("HTTPRoute", &f("{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, fraction: {numerator: 1}}}"), &f("{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, fraction: {numerator: 5, denominator: 4}}}"), "spec.rules[0].filters[0].requestMirror.fraction", "5/4");
    rule(
        "HTTPRoute",
        &route("backendRefs: [{name: e, port: 80, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [server]}}]}]"),
        &route("backendRefs: [{name: e, port: 80, filters: [{type: ResponseHeaderModifier}]}]"),
        "spec.rules[0].backendRefs[0].filters[0].responseHeaderModifier",
        "requires",
    );
}

#[test]
fn route_timeouts_and_retry() {
    rule(
        "HTTPRoute",
        &route("timeouts: {request: 1m30s, backendRequest: 10s}"),
        &route("timeouts: {request: 10 seconds}"),
        "spec.rules[0].timeouts.request",
        "\"10 seconds\"",
    );
    rule(
        "HTTPRoute",
        &route("timeouts: {request: 0s, backendRequest: 1h}"),
        &route("timeouts: {request: 5s, backendRequest: 5001ms}"),
        "spec.rules[0].timeouts.backendRequest",
        "\"5001ms\" is longer than request \"5s\"",
    );
    rule(
        "HTTPRoute",
        &route("timeouts: {request: 1h1m1s1ms}"),
        &route("timeouts: {request: 1h1m1s1ms1h}"),
        "spec.rules[0].timeouts.request",
        "1h1m1s1ms1h",
    );
    rule(
        "HTTPRoute",
        &route("retry: {codes: [503], attempts: 2, backoff: 100ms}"),
        &route("retry: {codes: [200]}"),
        "spec.rules[0].retry.codes[0]",
        "200",
    );
    rule(
        "HTTPRoute",
        &route("retry: {backoff: 1s}"),
        &route("retry: {backoff: 1.5s}"),
        "spec.rules[0].retry.backoff",
        "\"1.5s\"",
    );
}

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

#[test]
fn durations_parse_to_milliseconds() {
    use super::validate_route::parse_duration;
    assert_eq!(parse_duration("1h"), Some(3_600_000));
    assert_eq!(parse_duration("1m30s"), Some(90_000));
    assert_eq!(parse_duration("250ms"), Some(250));
    assert_eq!(parse_duration("0s"), Some(0));
    for bad in ["", "1", "s", "123456s", "1d", "-1s", "1h1m1s1ms1s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}
