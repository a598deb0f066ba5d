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
use mesh_api::meshconfig::MeshConfig;
use mesh_api::networking::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec,
};
use mesh_api::resource::{parse_object, IstioResource};
use mesh_api::security::{AuthorizationPolicySpec, PeerAuthenticationSpec};
use mesh_api::syncapi::{
    AgentMessage, ClientMessage, Endpoint, ProxyIdentity, ProxyView, Service, ServicePort,
    MAX_FRAME,
};
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
        for m in sync_messages() {
            v.extend(Vocab::from_example(
                m,
                &["REGISTRY_ONLY", "PERMISSIVE", "DISABLE"],
            ));
        }
        v
    })
}

/// One message of each kind, as JSON; the view carries the fixtures' resources.
fn sync_messages() -> &'static [Value] {
    static M: OnceLock<Vec<Value>> = OnceLock::new();
    M.get_or_init(|| {
        let mut view = ProxyView {
            version: 7,
            outbound_traffic_policy: "REGISTRY_ONLY".into(),
            ..Default::default()
        };
        view.services.push(
            Service {
                hostname: "web.shop.svc.cluster.local".into(),
                namespace: "shop".into(),
                origin: "Kubernetes".into(),
                addresses: vec!["10.96.0.9".into()],
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                    target_port: Some(8080),
                    protocol: "HTTP".into(),
                }],
                endpoints: vec![Endpoint {
                    address: "10.1.0.5".into(),
                    ports: [("http".to_string(), 8080)].into(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                    locality: "r/z/s".into(),
                    ready: true,
                    service_account: Some("web".into()),
                }],
                export_to: vec!["*".into()],
                location: Some("MESH_INTERNAL".into()),
                resolution: Some("STATIC".into()),
                subject_alt_names: vec!["spiffe://cluster.local/ns/shop/sa/web".into()],
            }
            .into(),
        );
        view.inbound.mtls_mode = "STRICT".into();
        view.inbound.port_mtls.insert(9100, "DISABLE".into());
        for doc in fixtures() {
            let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                format!(
                    "{}/{}",
                    m.namespace.clone().unwrap_or_default(),
                    m.name.clone().unwrap_or_default()
                )
            };
            match parse_object(doc) {
                Ok(Some(IstioResource::VirtualService(r))) => {
                    view.virtual_services.insert(key(&r.metadata), r.spec);
                }
                Ok(Some(IstioResource::DestinationRule(r))) => {
                    view.destination_rules.insert(r.spec.host.clone(), r.spec);
                }
                Ok(Some(IstioResource::AuthorizationPolicy(r))) => {
                    view.inbound.authorization.insert(key(&r.metadata), r.spec);
                }
                _ => {}
            }
        }
        let identity = ProxyIdentity {
            pod: "web-1".into(),
            namespace: "shop".into(),
            service_account: "web".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ips: vec!["10.1.0.5".into()],
            router: false,
        };
        let client = [
            ClientMessage::Subscribe {
                identity,
                last_version: Some(6),
                token: Some("t".into()),
                requested: vec!["stock.inventory.svc.cluster.local".into()],
                deltas: true,
            },
            ClientMessage::Lookup {
                target: "10.96.0.20".into(),
            },
            ClientMessage::Forget {
                targets: vec!["stock.inventory.svc.cluster.local".into()],
            },
            ClientMessage::Ack { version: 7 },
            ClientMessage::Nack {
                version: 7,
                reason: "bad route".into(),
            },
            ClientMessage::Csr {
                token: "t".into(),
                csr: "-----BEGIN".into(),
                ttl_seconds: 3600,
            },
        ];
        let delta = mesh_api::syncdelta::ViewDelta {
            base: view.version,
            version: view.version + 1,
            upsert: view.services.clone(),
            remove: vec!["gone.shop.svc.cluster.local".into()],
        };
        let agent = [
            AgentMessage::View {
                agent: "mesh-agent-0".into(),
                view,
            },
            AgentMessage::Delta {
                agent: "mesh-agent-0".into(),
                delta,
            },
            AgentMessage::Error {
                message: "no".into(),
            },
            AgentMessage::Certificate {
                cert_chain: vec!["a".into()],
                roots: vec!["r".into()],
            },
            AgentMessage::Lookup {
                target: "10.96.0.20".into(),
                host: Some("stock.inventory.svc.cluster.local".into()),
                refused: None,
            },
        ];
        let mut all: Vec<Value> = client
            .iter()
            .map(|m| serde_json::to_value(m).expect("JSON"))
            .collect();
        all.extend(agent.iter().map(|m| serde_json::to_value(m).expect("JSON")));
        all
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
/// the limit and re-encodes them to the bytes they came from; every frame decodes (or is
/// refused) as either side's message, and what decodes round-trips.
#[test]
fn sync_frames() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let mut msg = b.pick(sync_messages()).clone();
            if b.byte().is_multiple_of(8) {
                msg = json(&mut b, vocab(), 6);
            } else {
                mutate(&mut b, &mut msg, vocab());
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
            let sent = wire.clone();
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
            // What was taken off the wire is exactly the frames read (a
            // partial frame's header is held inside the codec).
            assert!(sent.starts_with(&again));
        });
}

/// The fixture objects (Istio resources, and the Kubernetes objects the agent
/// reads), one JSON document each.
fn fixtures() -> &'static [Value] {
    static F: OnceLock<Vec<Value>> = OnceLock::new();
    F.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut docs = Vec::new();
        for f in ["istio.yaml", "mesh.yaml"] {
            let text = std::fs::read_to_string(format!("{dir}/{f}")).expect("fixture");
            for d in text.split("\n---\n") {
                docs.push(serde_yaml_ng::from_str(d).expect("fixture YAML"));
            }
        }
        docs
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
            let mut text = if b.byte().is_multiple_of(2) {
                serde_yaml_ng::to_string(&doc).expect("YAML")
            } else {
                doc.to_string()
            };
            if b.byte().is_multiple_of(8) && !text.is_empty() {
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

/// The mesh config file: the defaults (plus selectors and fields the mesh
/// ignores) mutated by the bytes are accepted or refused with an error, never a
/// panic; an accepted config validates and reads back the same after writing it.
#[test]
fn mesh_file() {
    static BASE: OnceLock<(Value, Vocab)> = OnceLock::new();
    let (base, words) = BASE.get_or_init(|| {
        let mut v = serde_json::to_value(MeshConfig::default()).expect("JSON");
        v["neverInjectSelector"] = json!([{"matchLabels": {"app": "x"},
            "matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}]);
        v["defaultConfig"]["proxyMetadata"] = json!({"ISTIO_META_DNS_CAPTURE": "true"});
        v["enableAutoMtls"] = json!(true);
        v["meshNetworks"] = json!({});
        let extra = [
            "NotIn",
            "Exists",
            "DoesNotExist",
            "REGISTRY_ONLY",
            "ALLOW_ANY",
            "JSON",
            "TEXT",
            "enabled",
            "disabled",
            "auto",
            "on",
            "off",
            "IfNotPresent",
            "Always",
            "Never",
            "1s",
            "10ms",
            "1.5h",
            "100m",
            "1Gi",
            "1e3",
            "TPROXY",
            "10.0.0.0/8",
            "*",
        ];
        let words = Vocab::from_example(&v, &extra);
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
                let again = serde_yaml_ng::to_string(&f.mesh).expect("YAML");
                let back = mesh_agent::meshfile::parse(&again)
                    .unwrap_or_else(|e| panic!("{again}\nis refused: {e}"));
                assert_eq!(back.mesh, f.mesh, "{again}");
            }
        });
}
