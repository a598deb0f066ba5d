//! HTTPRoute's rules (parents, hostnames, backends, rule counts, matches, filters,
//! timeouts and retries) and duration parsing, the cases of `validate_route.rs`.
//! Separate from `validate_tests.rs`, whose `rule` helper they use, to keep each
//! file short.

use super::validate_tests::{rule, BACKEND};

fn route(rule_yaml: &str) -> String {
    format!("{{parentRefs: [{{name: gw}}], rules: [{{{rule_yaml}}}]}}")
}

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
