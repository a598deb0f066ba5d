//! Fuzz targets of the CNI side: the plugin's network configuration (stdin,
//! written by whoever installs the conflist), and a pod's redirect annotations
//! as the injector turns them into `istio-iptables` flags and `istio-init`
//! reads them back. `cargo test` runs each for about two seconds of random
//! inputs (bolero's random engine); run one longer by hand with
//! `BOLERO_RANDOM_TEST_TIME_MS=600000 cargo test -p mesh-cni --test fuzz <name>`,
//! or coverage-guided under libFuzzer with
//! `cargo +nightly bolero test -p mesh-cni --test fuzz <name> -T 10min`
//! (see tests/FUZZING.md).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use mesh_api::annotations::{sidecar, traffic};
use mesh_api::{RedirectDefaults, RedirectParams};
use mesh_cni::plugin::config::{self, SUPPORTED_VERSIONS};
use mesh_e2e::fuzz::{mutate, text, Bytes, Vocab};
use serde_json::{json, Value};

/// What `cargo test` spends on each target.
const CI_TIME: Duration = Duration::from_secs(2);

/// A complete plugin configuration as a runtime passes it.
fn base_conf() -> &'static (Value, Vocab) {
    static B: OnceLock<(Value, Vocab)> = OnceLock::new();
    B.get_or_init(|| {
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "mesh-cni",
            "podDir": "/tmp/pods",
            "stateDir": "/tmp/state",
            "readyFile": "/tmp/ready",
            "logFile": "/tmp/mesh-cni.log",
            "logLevel": "info",
            "iptablesBackend": "auto",
            "excludeNamespaces": ["kube-system"],
            "kubernetes": {"kubeconfig": "/etc/kubeconfig", "cniConfDir": "/etc/cni/net.d"},
            "redirectDefaults": serde_json::to_value(RedirectDefaults::default()).expect("JSON"),
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
                "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 0}],
                "dns": {}
            }
        });
        let mut extra: Vec<&str> = SUPPORTED_VERSIONS.to_vec();
        extra.extend([
            "legacy",
            "nft",
            "REDIRECT",
            "TPROXY",
            "*",
            "10.0.0.0/8",
            "::/0",
        ]);
        let vocab = Vocab::from_example(&conf, &extra);
        (conf, vocab)
    })
}

/// The stdin configuration: any bytes get a configuration or a CNI error with
/// the spec's codes that prints as JSON; nothing panics.
#[test]
fn cni_stdin_config() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let (base, vocab) = base_conf();
            let stdin = if b.byte().is_multiple_of(8) {
                b.raw(255).into_bytes()
            } else {
                let mut doc = base.clone();
                mutate(&mut b, &mut doc, vocab);
                serde_json::to_vec(&doc).expect("JSON")
            };
            match config::parse(&stdin) {
                Ok((_conf, version)) => assert!(SUPPORTED_VERSIONS.contains(&version.as_str())),
                Err(e) => {
                    assert!([1, 6, 7].contains(&e.code), "{e}");
                    let out: Value = serde_json::from_str(&e.to_json("1.0.0")).expect("JSON");
                    assert_eq!(out["code"], json!(e.code));
                }
            }
        });
}

/// Annotation keys of the redirect, and tokens of their values.
const KEYS: [&str; 11] = [
    traffic::INCLUDE_INBOUND_PORTS,
    traffic::EXCLUDE_INBOUND_PORTS,
    traffic::INCLUDE_OUTBOUND_PORTS,
    traffic::EXCLUDE_OUTBOUND_PORTS,
    traffic::INCLUDE_OUTBOUND_IP_RANGES,
    traffic::EXCLUDE_OUTBOUND_IP_RANGES,
    traffic::KUBEVIRT_INTERFACES,
    traffic::REROUTE_VIRTUAL_INTERFACES,
    traffic::EXCLUDE_INTERFACES,
    sidecar::INTERCEPTION_MODE,
    sidecar::STATUS_PORT,
];
const VALUE_TOKENS: [&str; 22] = [
    ",",
    " ",
    "*",
    "0",
    "80",
    "15021",
    "65535",
    "70000",
    "10.0.0.0/8",
    "10.1.2.3/32",
    "fd00::/8",
    "::/0",
    "0.0.0.0/0",
    "eth0",
    "net1",
    "-",
    "REDIRECT",
    "TPROXY",
    "NONE",
    "/",
    "=",
    "ü",
];

/// Redirect annotations: for any annotation values, the parameters derived
/// from them either come with an error naming the annotation, or render to
/// flags that `istio-init` parses back to the same parameters.
#[test]
fn redirect_annotations() {
    bolero::check!()
        .with_test_time(CI_TIME)
        .for_each(|data: &[u8]| {
            let mut b = Bytes::new(data);
            let mut ann = BTreeMap::new();
            for _ in 0..1 + b.byte() % 4 {
                let k = b.pick(&KEYS).to_string();
                let mut vb = Bytes::new(&data[data.len().min(usize::from(b.byte()))..]);
                ann.insert(
                    k,
                    text(&mut vb, &VALUE_TOKENS[..]).chars().take(40).collect(),
                );
            }
            match RedirectParams::for_pod(&ann, &RedirectDefaults::default()) {
                Ok(p) => {
                    let flags = p.to_flags();
                    let back = mesh_cni::flags::parse(&flags, |_| None)
                        .unwrap_or_else(|e| panic!("{ann:?} -> {flags:?}: {e}"));
                    assert_eq!(back.params, p, "{ann:?} -> {flags:?}");
                }
                Err(e) => assert!(KEYS.contains(&e.key.as_str()), "{e}"),
            }
        });
}
