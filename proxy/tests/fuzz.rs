//! Fuzz targets of the sidecar's parsers of untrusted bytes: the SNI/ALPN
//! sniffer, the protocol sniffer, the peer-metadata header and request-path
//! normalization. `cargo test` runs each for about two seconds of random
//! inputs (bolero's random engine); run one longer by hand with
//! `BOLERO_RANDOM_TEST_TIME_MS=600000 cargo test -p mesh-proxy --test fuzz <name>`,
//! or coverage-guided under libFuzzer with
//! `cargo +nightly bolero test -p mesh-proxy --test fuzz <name> -T 10min`
//! (see tests/FUZZING.md).

use std::time::Duration;

use mesh_e2e::fuzz::{text, Bytes};
use mesh_proxy::authz::normalize::{normalize, PathNormalization};
use mesh_proxy::detect::{classify, Detected};
use mesh_proxy::metrics::Workload;
use mesh_proxy::peer::{self, PeerCache};
use mesh_proxy::sni;

/// What `cargo test` spends on each target.
const CI_TIME: Duration = Duration::from_secs(2);

/// A length field: usually the true one, sometimes whatever the bytes say.
fn len_field(b: &mut Bytes, real: usize, width: usize) -> Vec<u8> {
    let v = if b.byte().is_multiple_of(8) {
        usize::from(b.byte()) << 8 | usize::from(b.byte())
    } else {
        real
    };
    v.to_be_bytes()[8 - width..].to_vec()
}

/// A ClientHello-shaped record whose parts and lengths the bytes choose.
fn client_hello(b: &mut Bytes) -> Vec<u8> {
    let mut exts = Vec::new();
    for _ in 0..b.byte() % 5 {
        let ty: u16 = match b.byte() % 4 {
            0 => 0,
            1 => 16,
            2 => 43,
            _ => u16::from(b.byte()),
        };
        let mut body = Vec::new();
        match ty {
            0 => {
                let name = b.raw(20).into_bytes();
                let mut entry = vec![b.byte() % 2];
                entry.extend(len_field(b, name.len(), 2));
                entry.extend(&name);
                body.extend(len_field(b, entry.len(), 2));
                body.extend(entry);
            }
            16 => {
                let mut list = Vec::new();
                for _ in 0..b.byte() % 4 {
                    let p = b.raw(10).into_bytes();
                    list.extend(len_field(b, p.len(), 1));
                    list.extend(p);
                }
                body.extend(len_field(b, list.len(), 2));
                body.extend(list);
            }
            _ => body.extend(b.raw(8).into_bytes()),
        }
        exts.extend(ty.to_be_bytes());
        exts.extend(len_field(b, body.len(), 2));
        exts.extend(body);
    }
    let mut hello = vec![3, 3];
    hello.extend([b.byte(); 32]);
    let sid = b.raw(32).into_bytes();
    hello.extend(len_field(b, sid.len(), 1));
    hello.extend(sid);
    hello.extend(len_field(b, 2, 2));
    hello.extend([0x13, 0x01]);
    hello.extend(len_field(b, 1, 1));
    hello.push(0);
    hello.extend(len_field(b, exts.len(), 2));
    hello.extend(exts);
    let mut hs = vec![if b.byte().is_multiple_of(16) {
        b.byte()
    } else {
        1
    }];
    hs.extend(len_field(b, hello.len(), 3));
    hs.extend(hello);
    let mut rec = vec![
        if b.byte().is_multiple_of(16) {
            b.byte()
        } else {
            0x16
        },
        3,
        1,
    ];
    rec.extend(len_field(b, hs.len(), 2));
    rec.extend(hs);
    rec
}

/// Whether `buf` holds a whole TLS record (header and the length it announces).
fn whole_record(buf: &[u8]) -> bool {
    buf.len() >= 5 && buf.len() >= 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]))
}

/// SNI and ALPN never panic and never answer from a cut-short record (the
/// proxy peeks again for more), and once the record is whole, more bytes on
/// the wire (the rest of the stream) cannot change the answer.
#[test]
fn sni_sniffer() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let mut buf = if b.byte().is_multiple_of(8) {
                b.raw(255).into_bytes()
            } else {
                client_hello(&mut b)
            };
            let cut = usize::from(b.byte());
            let full_sni = sni::parse(&buf);
            let full_alpn = sni::alpn(&buf);
            if let Some(name) = &full_sni {
                assert_eq!(name, &name.to_ascii_lowercase());
            }
            if !whole_record(&buf) {
                assert_eq!((&full_sni, &full_alpn), (&None, &None), "{buf:?}");
            }
            let prefix = &buf[..cut.min(buf.len())];
            let (p_sni, p_alpn) = (sni::parse(prefix), sni::alpn(prefix));
            if whole_record(prefix) {
                assert_eq!((p_sni, p_alpn), (full_sni.clone(), full_alpn.clone()));
            } else {
                assert_eq!((p_sni, p_alpn), (None, None), "prefix {prefix:?}");
            }
            if whole_record(&buf) {
                buf.extend(b.raw(64).into_bytes());
                assert_eq!(sni::parse(&buf), full_sni);
                assert_eq!(sni::alpn(&buf), full_alpn);
            }
        });
}

/// A classification is final: more bytes never change it, and a prefix of
/// the longest signature (the h2 preface, 24 bytes) is always enough.
#[test]
fn protocol_sniffer() {
    const SEEDS: [&[u8]; 5] = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET ",
        b"OPTIONS ",
        b"CONNECT ",
        b"\x16\x03\x01",
    ];
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let mut buf = b.pick(&SEEDS).to_vec();
            buf.truncate(usize::from(b.byte()) % (buf.len() + 1));
            buf.extend(b.raw(40).into_bytes());
            let mut decided: Option<Detected> = None;
            for n in 0..=buf.len() {
                let got = classify(&buf[..n]);
                if let Some(d) = decided {
                    assert_eq!(got, Some(d), "{:?} then {:?}", &buf[..n - 1], &buf[..n]);
                }
                if n >= 24 {
                    assert!(got.is_some(), "undecided after {n} bytes: {buf:?}");
                }
                decided = decided.or(got);
            }
        });
}

/// Tokens that make up peer-metadata headers and workload fields.
const PEER_TOKENS: [&str; 16] = [
    "workload=",
    "namespace=",
    "principal=",
    "app=",
    "version=",
    "service=",
    "revision=",
    ";",
    "=",
    "spiffe://cluster.local/ns/",
    "/sa/",
    "default",
    "reviews-v1",
    "\r\n",
    "ü",
    " ",
];

/// Decoding any header never panics; encode→decode keeps every field (with
/// `;`, `=` and line breaks replaced, as the header cannot carry them); the
/// cache never reports a principal the peer did not prove.
#[test]
fn peer_metadata() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let mut field = || -> std::sync::Arc<str> {
                let n = b.byte() % 4;
                let s: String = (0..n).map(|_| *b.pick(&PEER_TOKENS)).collect();
                std::sync::Arc::from(s.as_str())
            };
            let w = Workload {
                workload: field(),
                namespace: field(),
                principal: field(),
                app: field(),
                version: field(),
                canonical_service: field(),
                canonical_revision: field(),
            };
            let h = peer::encode(&w);
            let back = peer::decode(&h);
            if h.to_str().is_ok_and(|s| s != "workload=unknown") {
                let clean = |s: &str| s.replace([';', '=', '\r', '\n'], "_");
                assert_eq!(*back.workload, clean(&w.workload));
                assert_eq!(*back.namespace, clean(&w.namespace));
                assert_eq!(*back.principal, clean(&w.principal));
                assert_eq!(*back.app, clean(&w.app));
                assert_eq!(*back.version, clean(&w.version));
                assert_eq!(*back.canonical_service, clean(&w.canonical_service));
                assert_eq!(*back.canonical_revision, clean(&w.canonical_revision));
            }
            // Any header a peer can send.
            let raw = text(&mut b, &PEER_TOKENS);
            let Ok(h) = http::HeaderValue::from_bytes(raw.as_bytes()) else {
                return;
            };
            let cache = PeerCache::default();
            let id = mesh_api::Identity {
                trust_domain: "cluster.local".into(),
                namespace: "default".into(),
                service_account: "reviews".into(),
            };
            assert_eq!(*cache.source(&h, Some(&id)).principal, id.to_string());
            assert_eq!(&*cache.source(&h, None).principal, "unknown");
            assert_eq!(cache.destination(&h), peer::decode(&h));
        });
}

/// Tokens of request targets that normalization treats specially.
const PATH_TOKENS: [&str; 28] = [
    "/", "//", ".", "..", "%", "%%", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%00", "%25", "%3",
    "%30", "%32", "%36", "%61", "\\", "?", "#", "a", "admin", "0", "F", "e", "ü",
];

const MODES: [PathNormalization; 4] = [
    PathNormalization::None,
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

/// Normalization is idempotent (what authorization saw is what a second
/// normalization, or the app decoding once more, would see), leaves no dot
/// segments or backslashes (and no `//` when merging), never lets `%00` through,
/// and keeps the query as it was.
#[test]
fn path_normalization() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let mode = *b.pick(&MODES);
            let target = text(&mut b, &PATH_TOKENS);
            let once = match normalize(&target, mode) {
                Ok(once) => once,
                Err(e) => {
                    // Only a `%00`, as written or assembled by decoding.
                    let decodes = mode != PathNormalization::None && target.starts_with('/');
                    assert!(target.contains("%00") || decodes, "{target:?} refused");
                    assert!(e.to_string().contains(&format!("{target:?}")), "{e}");
                    return;
                }
            };
            let twice = normalize(&once, mode);
            assert_eq!(
                twice.as_deref(),
                Ok(&*once),
                "{mode:?}: {target:?} -> {once:?}"
            );
            if mode == PathNormalization::None || !target.starts_with('/') {
                assert_eq!(once, target);
                return;
            }
            let (path, query) = once.split_once('?').unwrap_or((&once, ""));
            let (_, want_query) = target.split_once('?').unwrap_or((&target, ""));
            assert_eq!(query, want_query, "{mode:?}: {target:?} -> {once:?}");
            assert!(!path.contains("%00"), "{mode:?}: {target:?} -> {once:?}");
            assert!(!path.contains('\\'), "{mode:?}: {target:?} -> {once:?}");
            let segs: Vec<&str> = path.split('/').collect();
            assert!(
                !segs.contains(&".") && !segs.contains(&".."),
                "{mode:?}: {target:?} -> {once:?}"
            );
            if mode != PathNormalization::Base {
                assert!(!path.contains("//"), "{mode:?}: {target:?} -> {once:?}");
            }
        });
}
