//! Fuzz targets of what the agent reads from outside: sync-protocol frames
//! (from proxies, and the agent's own messages as proxies read them), Istio
//! resources (YAML/JSON into the typed CRDs, then validation) and the mesh
//! config file. `cargo test` runs each for about two seconds of random inputs
//! (bolero's random engine); run one longer by hand with
//! `BOLERO_RANDOM_TEST_TIME_MS=600000 cargo test -p mesh-agent --test fuzz <name>`,
//! or coverage-guided under libFuzzer with
//! `cargo +nightly bolero test -p mesh-agent --test fuzz <name> -T 10min`
//! (see tests/FUZZING.md).

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use mesh_agent::objects::{parse_yaml, KubeObject};
use mesh_agent::protocol::{self, codec};
use mesh_api::networking::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec,
};
use mesh_api::resource::{parse_object, IstioResource};
use mesh_api::security::{AuthorizationPolicySpec, PeerAuthenticationSpec};
use mesh_api::syncapi::{AgentMessage, ClientMessage, MAX_FRAME};
use mesh_e2e::fuzz::{json, mutate, Bytes, Vocab};
use serde_json::{json, Value};
use tokio_util::codec::{Decoder, Encoder};

/// What `cargo test` spends on each target.
const CI_TIME: Duration = Duration::from_secs(2);

/// Field names and enum values of every CRD spec, and the sync messages' words.
fn vocab() -> &'static Vocab {
    static V: OnceLock<Vocab> = OnceLock::new();
    V.get_or_init(|| {
        let schemas = [
            schemars::schema_for!(VirtualServiceSpec),
            schemars::schema_for!(DestinationRuleSpec),
            schemars::schema_for!(GatewaySpec),
            schemars::schema_for!(ServiceEntrySpec),
            schemars::schema_for!(SidecarSpec),
            schemars::schema_for!(PeerAuthenticationSpec),
            schemars::schema_for!(AuthorizationPolicySpec),
        ];
        let mut v = Vocab::default();
        for s in schemas {
            let s = serde_json::to_value(s).expect("schema is JSON");
            v.extend(Vocab::from_schema(&s, &[]));
        }
        // The sync messages (no schema: they are not CRDs).
        let sync = json!({
            "type": ["subscribe", "ack", "nack", "csr", "view", "error", "certificate"],
            "identity": {"pod": "p", "namespace": "default", "serviceAccount": "sa",
                         "labels": {"app": "web"}, "ips": ["10.0.0.1"]},
            "lastVersion": 1, "version": 2, "reason": "r", "token": "t", "csr": "c",
            "ttlSeconds": 3600, "agent": "a", "message": "m", "certChain": [], "roots": [],
            "view": {"services": [{"hostname": "web.default.svc.cluster.local",
                "origin": "Kubernetes", "addresses": [], "exportTo": ["*", "."],
                "location": "MESH_EXTERNAL", "resolution": "DNS", "subjectAltNames": [],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "HTTP"}],
                "endpoints": [{"address": "10.0.0.2", "ports": {"http": 8080}, "labels": {},
                    "locality": "r/z/s", "ready": true, "serviceAccount": "sa"}]}],
                "virtualServices": {}, "destinationRules": {},
                "outboundTrafficPolicy": "ALLOW_ANY",
                "inbound": {"mtlsMode": "STRICT", "portMtls": {"8080": "PERMISSIVE"},
                            "authorization": {}}}
        });
        v.extend(Vocab::from_example(&sync, &["REGISTRY_ONLY", "PERMISSIVE", "DISABLE"]));
        v
    })
}

/// Decodes, and checks that what decoded survives encode→decode unchanged (a
/// view the agent sends must be the view the proxy applies).
fn round_trip<M>(frame: &[u8])
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(m) = protocol::decode::<M>(frame) {
        let again = protocol::encode(&m);
        let back: M = protocol::decode(&again)
            .unwrap_or_else(|e| panic!("{m:?} encodes to {again:?}, unreadable: {e}"));
        assert_eq!(back, m, "{again:?}");
    }
}

/// Sync frames: the codec splits any byte stream into frames no larger than
/// the limit and re-encodes them to the same bytes; every frame decodes (or is
/// refused) as either side's message, and what decodes round-trips.
#[test]
fn sync_frames() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let msg = json(&mut b, vocab(), 6);
            let mut msg = match msg {
                Value::Object(m) => Value::Object(m),
                other => json!({"type": "view", "agent": "a", "view": other}),
            };
            if b.byte() % 2 == 0 {
                let tag = ["subscribe", "ack", "nack", "csr", "view", "error", "certificate"];
                msg["type"] = json!(b.pick(&tag));
            }
            let frame = serde_json::to_vec(&msg).expect("JSON");
            round_trip::<AgentMessage>(&frame);
            round_trip::<ClientMessage>(&frame);

            // Framing: the JSON frame and raw bytes as a stream.
            let mut wire = BytesMut::new();
            codec()
                .encode(bytes::Bytes::from(frame.clone()), &mut wire)
                .expect("small frame encodes");
            wire.extend_from_slice(b.raw(64).as_bytes());
            let mut c = codec();
            let total = wire.len();
            let mut consumed = Vec::new();
            while let Ok(Some(f)) = c.decode(&mut wire) {
                assert!(f.len() <= MAX_FRAME);
                consumed.push(f.freeze());
            }
            assert_eq!(consumed.first().map(|f| &f[..]), Some(&frame[..]));
            let mut again = BytesMut::new();
            for f in &consumed {
                codec().encode(f.clone(), &mut again).expect("re-encode");
                round_trip::<ClientMessage>(f);
            }
            assert_eq!(again.len() + wire.len(), total);
        });
}

/// The fixture resources, one JSON document each.
fn fixtures() -> &'static [Value] {
    static F: OnceLock<Vec<Value>> = OnceLock::new();
    F.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/istio.yaml");
        let text = std::fs::read_to_string(path).expect("fixture");
        text.split("\n---\n")
            .map(|d| serde_yaml_ng::from_str(d).expect("fixture YAML"))
            .collect()
    })
}

/// Rebuilds the object a resource came from (served apiVersion of its group).
fn object_of(r: &IstioResource) -> Value {
    let group = match r {
        IstioResource::PeerAuthentication(_) | IstioResource::AuthorizationPolicy(_) => {
            "security.istio.io/v1"
        }
        _ => "networking.istio.io/v1",
    };
    json!({
        "apiVersion": group,
        "kind": r.kind(),
        "metadata": serde_json::to_value(r.meta()).expect("metadata is JSON"),
        "spec": r.spec_json(),
    })
}

/// Istio resources: a fixture mutated by the bytes, as YAML or JSON text
/// (sometimes with a raw byte flipped), goes through the agent's reader and
/// validation without panicking; every resource read re-encodes to itself
/// (what the agent stores and sends is what was written).
#[test]
fn crd_decode() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let mut doc = b.pick(fixtures()).clone();
            mutate(&mut b, &mut doc, vocab());
            let mut text = if b.byte() % 2 == 0 {
                serde_yaml_ng::to_string(&doc).expect("YAML")
            } else {
                doc.to_string()
            };
            if b.byte() % 8 == 0 && !text.is_empty() {
                let mut raw = text.into_bytes();
                let i = usize::from(b.byte()) * 7 % raw.len();
                raw[i] = b.byte();
                text = String::from_utf8_lossy(&raw).into_owned();
            }
            let (objs, _errs) = parse_yaml(&text);
            for (_, o) in objs {
                let KubeObject::Istio(r) = o else { continue };
                let _ = mesh_agent::validate::validate(&r);
                let again = object_of(&r);
                let back = parse_object(&again);
                assert_eq!(back, Ok(Some(r.clone())), "{again}");
            }
        });
}

/// The mesh config file: the fixture mutated by the bytes is accepted or
/// refused with an error, never a panic, and an accepted one validates.
#[test]
fn mesh_file() {
    static BASE: OnceLock<(Value, Vocab)> = OnceLock::new();
    let (base, words) = BASE.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mesh.yaml");
        let text = std::fs::read_to_string(path).expect("fixture");
        let v: Value = serde_yaml_ng::from_str(&text).expect("fixture YAML");
        let defaults =
            serde_json::to_value(mesh_api::meshconfig::MeshConfig::default()).expect("JSON");
        let mut words = Vocab::from_example(&v, &["1s", "10ms", "1.5h", "100m", "1Gi", "1e3"]);
        words.extend(Vocab::from_example(&defaults, &[]));
        (v, words)
    });
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let mut doc = base.clone();
            mutate(&mut b, &mut doc, words);
            let text = serde_yaml_ng::to_string(&doc).expect("YAML");
            if let Ok(f) = mesh_agent::meshfile::parse(&text) {
                f.mesh.validate().expect("parse validates");
            }
        });
}
