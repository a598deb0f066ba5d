//! Routing decisions on Istio's own Bookinfo rules and on tables of edge cases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_api::networking::VirtualServiceSpec;
use mesh_api::values::ValueError;

use super::*;

fn vs(yaml: &str) -> BTreeMap<String, VirtualServiceSpec> {
    let mut out = BTreeMap::new();
    for doc in yaml.split("\n---") {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(doc).unwrap();
        if v["kind"] != "VirtualService" {
            continue;
        }
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let spec: VirtualServiceSpec = serde_yaml_ng::from_value(v["spec"].clone()).unwrap();
        out.insert(format!("default/{name}"), spec);
    }
    out
}

fn bookinfo(file: &str) -> RouteTable {
    let path = format!(
        "{}/../../shared/samples/bookinfo/networking/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let t = RouteTable::compile(
        &vs(&std::fs::read_to_string(path).unwrap()),
        "cluster.local",
    );
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    t
}

fn facts<'a>(
    h: &'a http::HeaderMap,
    path: &'a str,
    labels: &'a BTreeMap<String, String>,
) -> Facts<'a> {
    Facts {
        method: "GET",
        path,
        query: "",
        scheme: "http",
        authority: "reviews:9080",
        headers: h,
        port: 9080,
        source_labels: labels,
        source_namespace: "default",
        gateway: None,
    }
}

#[test]
fn jason_goes_to_v2_others_to_v1() {
    let t = bookinfo("virtual-service-reviews-test-v2.yaml");
    let routes = t.for_host("reviews.default.svc.cluster.local").unwrap();
    let labels = BTreeMap::new();
    let mut h = http::HeaderMap::new();
    let r = select(routes, &facts(&h, "/reviews/0", &labels)).unwrap();
    assert_eq!(r.targets[0].subset.as_deref(), Some("v1"));
    h.insert("end-user", "jason".parse().unwrap());
    let r = select(routes, &facts(&h, "/reviews/0", &labels)).unwrap();
    assert_eq!(r.targets[0].subset.as_deref(), Some("v2"));
    h.insert("end-user", "jasonx".parse().unwrap());
    let r = select(routes, &facts(&h, "/reviews/0", &labels)).unwrap();
    assert_eq!(
        r.targets[0].subset.as_deref(),
        Some("v1"),
        "exact match only"
    );
}

#[test]
fn weights_split_as_written() {
    let t = bookinfo("virtual-service-reviews-80-20.yaml");
    let routes = t.for_host("reviews.default.svc.cluster.local").unwrap();
    let targets = &routes[0].targets;
    let mut v1 = 0;
    for i in 0..1000 {
        let roll = f64::from(i) / 10.0;
        if pick_target(targets, roll).unwrap().subset.as_deref() == Some("v1") {
            v1 += 1;
        }
    }
    assert_eq!(v1, 800, "a uniform draw gives exactly the written split");
}

#[test]
fn delay_and_abort_faults_parse() {
    let t = bookinfo("virtual-service-ratings-test-delay.yaml");
    let r = &t.for_host("ratings.default.svc.cluster.local").unwrap()[0];
    let f = r.fault.as_ref().unwrap();
    assert_eq!(f.delay.unwrap().0, Duration::from_secs(7));
    let t = bookinfo("virtual-service-ratings-test-abort.yaml");
    let r = &t.for_host("ratings.default.svc.cluster.local").unwrap()[0];
    assert_eq!(r.fault.as_ref().unwrap().abort_http.unwrap().0, 500);
}

#[test]
fn every_bookinfo_virtual_service_compiles() {
    let dir = format!(
        "{}/../../shared/samples/bookinfo/networking",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        if !text.contains("kind: VirtualService") {
            continue;
        }
        let t = RouteTable::compile(&vs(&text), "cluster.local");
        assert!(
            t.errors.is_empty(),
            "{}: {:?}",
            e.path().display(),
            t.errors
        );
        n += 1;
    }
    assert!(n >= 10, "{n}");
}

fn table(yaml: &str) -> Arc<Vec<Route>> {
    let spec: VirtualServiceSpec = serde_yaml_ng::from_str(yaml).unwrap();
    let t = RouteTable::compile(
        &BTreeMap::from([("ns/x".to_string(), spec)]),
        "cluster.local",
    );
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    t.for_host("svc.ns.svc.cluster.local").unwrap().clone()
}

#[test]
fn match_conditions() {
    let routes = table(
        r#"
hosts: [svc]
http:
- name: regex-uri
  match: [{uri: {regex: "/api/v[0-9]+/.*"}}]
  route: [{destination: {host: a}}]
- name: case-insensitive-prefix
  match: [{uri: {prefix: "/Static"}, ignoreUriCase: true}]
  route: [{destination: {host: b}}]
- name: present-header-and-method
  match: [{headers: {x-debug: {}}, method: {exact: POST}}]
  route: [{destination: {host: c}}]
- name: without-header
  match: [{withoutHeaders: {x-canary: {exact: "1"}}, queryParams: {v: {prefix: "2"}}}]
  route: [{destination: {host: d}}]
- name: source
  match: [{sourceLabels: {app: productpage}, port: 9080}]
  route: [{destination: {host: e}}]
- name: fallback
  route: [{destination: {host: f}}]
"#,
    );
    let labels = BTreeMap::new();
    let pp = BTreeMap::from([("app".to_string(), "productpage".to_string())]);
    let mut h = http::HeaderMap::new();
    let name = |f: &Facts<'_>| select(&routes, f).and_then(|r| r.name.clone()).unwrap();
    assert_eq!(name(&facts(&h, "/api/v2/x", &labels)), "regex-uri");
    assert_eq!(
        name(&facts(&h, "/api/vx/x", &labels)),
        "fallback",
        "regex is anchored"
    );
    assert_eq!(
        name(&facts(&h, "/static/app.js", &labels)),
        "case-insensitive-prefix"
    );
    h.insert("x-debug", "".parse().unwrap());
    let mut f = facts(&h, "/", &labels);
    f.method = "POST";
    assert_eq!(name(&f), "present-header-and-method");
    let h2 = http::HeaderMap::new();
    let mut f = facts(&h2, "/", &labels);
    f.query = "a=1&v=2.1";
    assert_eq!(name(&f), "without-header");
    let mut h3 = http::HeaderMap::new();
    h3.insert("x-canary", "1".parse().unwrap());
    let mut f = facts(&h3, "/", &labels);
    f.query = "v=2";
    assert_eq!(name(&f), "fallback", "withoutHeaders excludes");
    assert_eq!(name(&facts(&h2, "/", &pp)), "source");
}

#[test]
fn prefix_replacing_redirect_uri() {
    let routes = table(
        r#"
hosts: [svc]
http:
- match: [{uri: {exact: "/prefix"}}]
  redirect: {uri: "%PREFIX()%/one"}
- match: [{uri: {prefix: "/prefix/"}}]
  redirect: {uri: "%PREFIX()%/one/"}
- match: [{uri: {prefix: "/full/"}}]
  redirect: {uri: "/whole"}
"#,
    );
    let h = http::HeaderMap::new();
    let l = BTreeMap::new();
    for (req, want) in [
        ("/prefix", "/one"),
        ("/prefix/", "/one/"),
        ("/prefix/two?q=1", "/one/two?q=1"),
    ] {
        let path = req.split('?').next().unwrap();
        let f = facts(&h, path, &l);
        assert_eq!(
            rewrite_path(select(&routes, &f).unwrap(), &f, req).as_deref(),
            Some(want),
            "{req}"
        );
    }
    // A plain redirect uri is not a rewrite: the caller replaces the whole path.
    let f = facts(&h, "/full/x", &l);
    assert_eq!(
        rewrite_path(select(&routes, &f).unwrap(), &f, "/full/x"),
        None
    );
}

#[test]
fn rewrites() {
    let routes = table(
        r#"
hosts: [svc]
http:
- match: [{uri: {prefix: "/old/"}}]
  rewrite: {uri: "/new/"}
  route: [{destination: {host: a}}]
- match: [{uri: {exact: "/x"}}]
  rewrite: {uri: "/y"}
  route: [{destination: {host: a}}]
- match: [{uri: {prefix: "/re/"}}]
  rewrite: {uriRegexRewrite: {match: "^/re/(.*)$", rewrite: "/v2/\\1"}}
  route: [{destination: {host: a}}]
"#,
    );
    let h = http::HeaderMap::new();
    let l = BTreeMap::new();
    let f = facts(&h, "/old/a/b", &l);
    assert_eq!(
        rewrite_path(select(&routes, &f).unwrap(), &f, "/old/a/b?q=1").unwrap(),
        "/new/a/b?q=1"
    );
    let f = facts(&h, "/x", &l);
    assert_eq!(
        rewrite_path(select(&routes, &f).unwrap(), &f, "/x").unwrap(),
        "/y"
    );
    let f = facts(&h, "/re/abc", &l);
    assert_eq!(
        rewrite_path(select(&routes, &f).unwrap(), &f, "/re/abc").unwrap(),
        "/v2/abc"
    );
}

#[test]
fn bad_regex_rejects_the_whole_virtual_service() {
    let spec: VirtualServiceSpec =
        serde_yaml_ng::from_str("hosts: [svc]\nhttp:\n- match: [{uri: {regex: \"(\"}}]\n  route: [{destination: {host: a}}]\n").unwrap();
    let t = RouteTable::compile(
        &BTreeMap::from([("ns/bad".to_string(), spec)]),
        "cluster.local",
    );
    assert!(t.for_host("svc.ns.svc.cluster.local").is_none());
    assert_eq!(t.errors[0].0, "ns/bad");
    assert_eq!(
        t.errors[0].1.to_string(),
        "http[0].match[0].uri: invalid regex \"(\": unclosed group"
    );
}

#[test]
fn compound_durations_are_enforced_and_bad_ones_are_errors() {
    let routes = table(
        "hosts: [svc]\nhttp:\n- timeout: 0m1s\n  retries: {attempts: 2, perTryTimeout: 1m0.5s}\n  fault: {delay: {fixedDelay: 1h2m, percentage: {value: 100}}}\n  corsPolicy: {allowOrigins: [{exact: a}], maxAge: 1m30s}\n  route: [{destination: {host: a}}]\n",
    );
    let r = &routes[0];
    assert_eq!(r.timeout, Some(Duration::from_secs(1)));
    assert_eq!(
        r.retries.as_ref().unwrap().per_try_timeout,
        Some(Duration::from_millis(60_500))
    );
    assert_eq!(
        r.fault.as_ref().unwrap().delay.unwrap().0,
        Duration::from_secs(3720)
    );
    assert_eq!(r.cors_max_age, Some(Duration::from_secs(90)));
    for (field, yaml, path) in [
        ("timeout", "timeout: 1 s", "http[0].timeout"),
        (
            "perTryTimeout",
            "retries: {attempts: 1, perTryTimeout: 1x}",
            "http[0].retries.perTryTimeout",
        ),
        (
            "fixedDelay",
            "fault: {delay: {fixedDelay: soon}}",
            "http[0].fault.delay.fixedDelay",
        ),
    ] {
        let spec: VirtualServiceSpec = serde_yaml_ng::from_str(&format!(
            "hosts: [svc]\nhttp:\n- {yaml}\n  route: [{{destination: {{host: a}}}}]\n"
        ))
        .unwrap();
        let t = RouteTable::compile(
            &BTreeMap::from([("ns/x".to_string(), spec)]),
            "cluster.local",
        );
        assert_eq!(t.errors.len(), 1, "{field}");
        assert_eq!(t.errors[0].1.path, path, "{field}");
        assert!(
            matches!(t.errors[0].1.error, ValueError::Duration(_)),
            "{field}"
        );
    }
}

#[test]
fn targets() {
    assert_eq!(
        fqdn("reviews", "default", "cluster.local"),
        "reviews.default.svc.cluster.local"
    );
    assert_eq!(
        fqdn("httpbin.org", "default", "cluster.local"),
        "httpbin.org"
    );
}

#[test]
fn a_bare_address_in_destination_subnets_is_a_single_address_block() {
    let spec: VirtualServiceSpec = serde_yaml_ng::from_str(
        "hosts: [svc]\ntcp:\n- match: [{destinationSubnets: [10.0.0.5]}]\n  route: [{destination: {host: a}}]\n",
    )
    .unwrap();
    let t = RouteTable::compile(
        &BTreeMap::from([("ns/x".to_string(), spec)]),
        "cluster.local",
    );
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    let l4 = &t.l4["svc.ns.svc.cluster.local"][0];
    let no_labels = BTreeMap::new();
    let facts = |dst: &str| L4Facts {
        dst: dst.parse().unwrap(),
        sni: None,
        source_labels: &no_labels,
        source_namespace: "ns",
    };
    assert!(l4.matches(&facts("10.0.0.5:80")));
    // Dropping the entry would have matched every destination.
    assert!(!l4.matches(&facts("10.0.0.6:80")));
    let bad: VirtualServiceSpec = serde_yaml_ng::from_str(
        "hosts: [svc]\ntcp:\n- match: [{destinationSubnets: [10.0.0.0/33]}]\n  route: [{destination: {host: a}}]\n",
    )
    .unwrap();
    let t = RouteTable::compile(
        &BTreeMap::from([("ns/x".to_string(), bad)]),
        "cluster.local",
    );
    assert_eq!(
        t.errors[0].1.to_string(),
        "tcp[0].match[0].destinationSubnets[0]: invalid IP address or CIDR block \"10.0.0.0/33\""
    );
    assert!(t.l4.is_empty());
}
