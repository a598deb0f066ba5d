//! Property: every VirtualService and DestinationRule the agent's validator
//! accepts, the proxy's compiler accepts too. Resources are generated from
//! alphabets chosen to hit the places where two parsers used to disagree:
//! regexes with `(?x)`, `#`, stray `)`, flags and classes; Go-style compound
//! durations (`0m1s`, `1h2m`, `.5s`); every kind of string match, with and
//! without `ignoreUriCase`; addresses and blocks in `destinationSubnets`. Each generated resource goes through the real
//! validator (`mesh_agent::validate::validate`) and, when it passes, the real
//! `Snapshot::compile` of a view holding it, which must not refuse it.

use mesh_api::resource::{parse_object, IstioResource};
use mesh_api::syncapi::{ProxyView, Service, ServicePort};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

const CASES: u32 = 600;

fn pieces(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(prop::sample::select(alphabet), 0..max).prop_map(|v| v.concat())
}

/// Mostly well-formed patterns built from valid atoms (literal `#`, space and
/// escaped `)` included), some from hostile tokens (`(?x)`, stray `)`, flags
/// RE2 lacks, unbalanced classes).
fn regex() -> impl Strategy<Value = String> {
    const ATOMS: &[&str] = &[
        "a", "/", ".*", "(?:a|/)", "[a-z]", "\\d+", "x?", "(?i)", "(?m)", "(?s:.)", "#", " ",
        "\\)", "\\#", "(?U)a+", "[)#]", "\\pL", "$", "^", "(v1|v2)", "a{2,3}",
    ];
    const HOSTILE: &[&str] = &[
        "a", "/", ".", "*", "+", "?", "(", ")", "(?:", "(?x)", "(?i)", "(?m)", "(?s)", "(?U)",
        "(?R)", "(?-u)", "#", " ", "\n", "|", "[", "]", "[^a]", "\\", "\\d", "\\w", "\\)", "{2}",
        "{", "}", "^", "$", "-", "0", "x", "\\Q", "(?P<n>", "\\pL",
    ];
    prop_oneof![3 => pieces(ATOMS, 5), 1 => pieces(HOSTILE, 6)]
}

/// Mostly Go-style compound durations, some malformed ones.
fn duration() -> impl Strategy<Value = String> {
    const NUM: &[&str] = &["0", "1", "1.5", ".5", "10", "100", "1.", "007", "2"];
    const UNIT: &[&str] = &["ns", "us", "µs", "ms", "s", "m", "h"];
    const BAD_NUM: &[&str] = &["", ".", "1.2.3", "-1", "1e3"];
    const BAD_UNIT: &[&str] = &["", " ", "x", "S", "sec"];
    let part = |n: &'static [&'static str], u: &'static [&'static str]| {
        (prop::sample::select(n), prop::sample::select(u)).prop_map(|(n, u)| n.to_string() + u)
    };
    let good = prop::collection::vec(part(NUM, UNIT), 1..4).prop_map(|p| p.concat());
    let bad = (
        prop::sample::select(&["", "+", "-"][..]),
        prop::collection::vec(
            prop_oneof![part(NUM, BAD_UNIT), part(BAD_NUM, UNIT), part(NUM, UNIT)],
            1..3,
        ),
    )
        .prop_map(|(sign, p)| sign.to_string() + &p.concat());
    prop_oneof![3 => good, 1 => bad]
}

/// A StringMatch: exact, prefix or regex (occasionally two, or none).
fn string_match() -> impl Strategy<Value = Value> {
    let text = pieces(&["/", "a", "B", "*", " ", "#"], 4);
    prop_oneof![
        2 => text.clone().prop_map(|s| json!({ "exact": s })),
        2 => text.clone().prop_map(|s| json!({ "prefix": s })),
        6 => regex().prop_map(|r| json!({ "regex": r })),
        1 => regex().prop_map(|r| json!({ "regex": r, "exact": "/x" })),
        1 => Just(json!({})),
    ]
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop::option::weighted(0.3, s)
}

fn http_match() -> impl Strategy<Value = Value> {
    (
        opt(string_match()),
        opt(string_match()),
        opt(string_match()),
        opt(string_match()),
        opt(any::<bool>()),
        opt(string_match()),
    )
        .prop_map(|(uri, authority, header, query, ignore_case, without)| {
            let mut m = json!({});
            if let Some(u) = uri {
                m["uri"] = u;
            }
            if let Some(a) = authority {
                m["authority"] = a;
            }
            if let Some(h) = header {
                m["headers"] = json!({ "x-user": h });
            }
            if let Some(q) = query {
                m["queryParams"] = json!({ "q": q });
            }
            if let Some(w) = without {
                m["withoutHeaders"] = json!({ "x-skip": w });
            }
            if let Some(ic) = ignore_case {
                m["ignoreUriCase"] = json!(ic);
            }
            m
        })
}

fn http_route() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(http_match(), 0..3),
        opt(duration()),
        opt(duration()),
        opt(duration()),
        opt(duration()),
        opt(regex()),
        opt(string_match()),
    )
        .prop_map(
            |(matches, timeout, per_try, delay, max_age, rewrite, origin)| {
                let mut r = json!({
                    "match": matches,
                    "route": [{ "destination": { "host": "echo" } }],
                });
                if let Some(t) = timeout {
                    r["timeout"] = json!(t);
                }
                if let Some(t) = per_try {
                    r["retries"] = json!({ "attempts": 2, "perTryTimeout": t });
                }
                if let Some(d) = delay {
                    r["fault"] =
                        json!({ "delay": { "fixedDelay": d, "percentage": { "value": 50 } } });
                }
                if let Some(o) = origin {
                    r["corsPolicy"] = json!({ "allowOrigins": [o] });
                    if let Some(a) = max_age {
                        r["corsPolicy"]["maxAge"] = json!(a);
                    }
                }
                if let Some(re) = rewrite {
                    r["rewrite"] = json!({ "uriRegexRewrite": { "match": re, "rewrite": "/\\1" } });
                }
                r
            },
        )
}

fn resource(kind: &str, spec: Value) -> IstioResource {
    let obj = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": { "name": "gen", "namespace": "default" },
        "spec": spec,
    });
    parse_object(&obj)
        .expect("generated resources are well formed")
        .expect("an Istio kind")
}

fn view() -> ProxyView {
    ProxyView {
        version: 1,
        services: vec![Service {
            hostname: "echo.default.svc.cluster.local".into(),
            namespace: "default".into(),
            addresses: vec!["10.96.0.10".into()],
            ports: vec![ServicePort {
                name: "http".into(),
                port: 8080,
                target_port: Some(8080),
                protocol: "HTTP".into(),
            }],
            ..Default::default()
        }
        .into()],
        ..Default::default()
    }
}

#[test]
fn whatever_the_validator_accepts_the_proxy_compiles() {
    let subnet = prop::sample::select(
        &[
            "10.0.0.5",
            "10.0.0.0/8",
            "fd00::1",
            "fd00::/64",
            "10.0.0.0/33",
            "10.0.0",
            " 10.0.0.1",
        ][..],
    );
    let strategy = (
        prop::collection::vec(http_route(), 1..3),
        opt(duration()),
        prop::collection::vec(subnet, 0..3),
    );
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |(http, ejection, subnets)| {
            let tcp = json!([{
                "match": [{ "destinationSubnets": subnets }],
                "route": [{ "destination": { "host": "echo" } }],
            }]);
            let vs = resource(
                "VirtualService",
                json!({ "hosts": ["echo"], "http": http, "tcp": tcp }),
            );
            let mut outlier = json!({ "consecutive5xxErrors": 3 });
            if let Some(e) = &ejection {
                outlier["baseEjectionTime"] = json!(e);
            }
            let dr = resource(
                "DestinationRule",
                json!({ "host": "echo", "trafficPolicy": { "outlierDetection": outlier } }),
            );
            let mut v = view();
            for r in [&vs, &dr] {
                if mesh_agent::validate::has_errors(&mesh_agent::validate::validate(r)) {
                    return Ok(());
                }
            }
            let (IstioResource::VirtualService(vs), IstioResource::DestinationRule(dr)) = (vs, dr)
            else {
                unreachable!("built as these kinds")
            };
            v.virtual_services.insert("default/gen".into(), vs.spec.clone());
            v.destination_rules
                .insert("echo.default.svc.cluster.local".into(), dr.spec.clone());
            accepted.set(accepted.get() + 1);
            match mesh_proxy::snapshot::Snapshot::compile(v, "default") {
                Ok(_) => Ok(()),
                Err(e) => Err(TestCaseError::fail(format!(
                    "validator accepted, proxy refused: {e}\nVirtualService: {}\nDestinationRule: {}",
                    serde_json::to_string(&vs.spec).unwrap(),
                    serde_json::to_string(&dr.spec).unwrap()
                ))),
            }
        })
        .unwrap();
    // Not vacuous: a good share of the generated resources pass validation.
    assert!(
        accepted.get() >= CASES / 10,
        "only {} of {CASES} cases were accepted by the validator",
        accepted.get()
    );
}
