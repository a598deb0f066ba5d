//! Fuzz targets of the shared annotation-value parsers (pod annotations are
//! written by users; the webhook, the CNI plugin and the proxy all read them):
//! port/CIDR/interface lists, booleans, the local rate limit, and the mesh
//! config's duration and quantity checks. Inputs are strings built from each
//! grammar's tokens plus raw bytes. `cargo test` runs each for about two seconds
//! of random inputs (bolero's random engine); run one longer by hand with
//! `BOLERO_RANDOM_TEST_TIME_MS=600000 cargo test -p mesh-api --test fuzz <name>`,
//! or coverage-guided under libFuzzer with
//! `cargo +nightly bolero test -p mesh-api --test fuzz <name> -T 10min`
//! (see tests/FUZZING.md). The redirect annotations as a whole are fuzzed with
//! the CNI flags they become (cni/tests/fuzz.rs).

use std::time::Duration;

use mesh_api::annotations::{self, AnnotationError};
use mesh_api::meshconfig::{is_duration, is_quantity};
use mesh_api::ratelimit;
use mesh_e2e::fuzz::{text, Bytes};

/// What `cargo test` spends on each target.
const CI_TIME: Duration = Duration::from_secs(2);

const KEY: &str = "traffic.sidecar.istio.io/excludeInboundPorts";

/// Tokens of list-valued annotations.
const LIST_TOKENS: [&str; 24] = [
    ",",
    " ",
    "*",
    "0",
    "1",
    "80",
    "65535",
    "65536",
    "4294967296",
    "-",
    "+",
    "10.0.0.0",
    "/",
    "8",
    "32",
    "33",
    "::",
    "fe80::1",
    "128",
    "eth0",
    "veth",
    ":",
    "\t",
    "ü",
];

/// An error names the annotation key and quotes the whole value (the rule for
/// every bad-input message).
fn names_value(e: &AnnotationError, key: &str, value: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains(key) && msg.contains(&format!("{value:?}")),
        "{msg}"
    );
}

/// List parsers: a result agrees with the value (one entry per comma item, each
/// in range), and an error names the key and the value.
#[test]
fn annotation_lists() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let v = text(&mut b, &LIST_TOKENS);
            let items = if v.trim().is_empty() {
                0
            } else {
                v.split(',').count()
            };
            match annotations::parse_port_list(KEY, &v, "excludeInboundPorts") {
                Ok(ports) => {
                    assert_eq!(ports.len(), items, "{v:?}");
                    assert!(!ports.contains(&0));
                }
                Err(e) => names_value(&e, KEY, &v),
            }
            if let Err(e) = annotations::parse_port_selection(KEY, &v, "includeInboundPorts") {
                names_value(&e, KEY, &v);
            }
            match annotations::parse_cidr_selection(KEY, &v, "includeIPRanges") {
                Ok(mesh_api::redirect::Selection::Only(c)) => assert_eq!(c.len(), items),
                Ok(_) => assert!(matches!(v.trim(), "" | "*")),
                Err(e) => names_value(&e, KEY, &v),
            }
            match annotations::parse_interfaces(KEY, &v, "excludeInterfaces") {
                Ok(names) => {
                    assert_eq!(names.len(), items, "{v:?}");
                    for n in names {
                        assert!((1..=15).contains(&n.len()) && !n.contains(['/', ':']));
                    }
                }
                Err(e) => names_value(&e, KEY, &v),
            }
            for r in [
                annotations::parse_port(KEY, &v, "statusPort").map(|_| ()),
                annotations::parse_bool(KEY, &v).map(|_| ()),
                annotations::parse_u32(KEY, &v).map(|_| ()),
                annotations::parse_interception_mode(KEY, &v).map(|_| ()),
            ] {
                if let Err(e) = r {
                    names_value(&e, KEY, &v);
                }
            }
            let _ = annotations::inject_override(Some(&v));
        });
}

/// Tokens of the rate-limit grammar (`N/INTERVAL[,burst=N][,port=P];...`).
const RATE_TOKENS: [&str; 22] = [
    "1",
    "0",
    "50",
    "100",
    "99999999999999999999",
    "18446744073709551616",
    ".",
    "/",
    "s",
    "ms",
    "m",
    "h",
    ",",
    "burst=",
    "port=",
    ";",
    " ",
    "e",
    "-",
    "inf",
    "9080",
    "=",
];

/// The local rate limit: accepted buckets are usable (positive counts, an
/// interval of at least 50 ms, one bucket per scope); refused values get an
/// error naming the annotation and the value; nothing panics.
#[test]
fn rate_limit() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let v = text(&mut b, &RATE_TOKENS);
            match ratelimit::parse(&v) {
                Ok(buckets) => {
                    for (i, k) in buckets.iter().enumerate() {
                        assert!(k.tokens_per_fill > 0 && k.max_tokens > 0, "{v:?}");
                        assert!(k.fill_interval >= Duration::from_millis(50), "{v:?}");
                        assert!(buckets[..i].iter().all(|o| o.port != k.port), "{v:?}");
                    }
                }
                Err(e) => names_value(&e, ratelimit::ANNOTATION, &v),
            }
        });
}

/// Tokens of Go durations and Kubernetes quantities.
const QUANTITY_TOKENS: [&str; 18] = [
    "1",
    "0",
    ".",
    "5",
    "ns",
    "us",
    "µs",
    "ms",
    "s",
    "m",
    "h",
    "Ki",
    "Gi",
    "e",
    "E",
    "+",
    "-",
    "99999999999",
];

/// The duration and quantity checks of the mesh config never panic, and
/// accept only what starts with a number.
#[test]
fn durations_and_quantities() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let v = text(&mut b, &QUANTITY_TOKENS);
            let starts_numeric = |s: &str| {
                s.trim()
                    .starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | '+' | '-'))
            };
            if is_duration(&v) || is_quantity(&v) {
                assert!(starts_numeric(&v), "{v:?}");
            }
        });
}
