//! 10,000 generated malformed AdmissionReviews (seeded, so failures reproduce) over
//! real HTTPS keep-alive connections: every one is answered with a 4xx, or 200 with
//! `allowed: false` and no patch; the server never crashes or hangs, and a valid
//! review still gets its patch afterwards.

mod common;

use common::net::{Client, TestServer};
use common::{apply_response, review_for, TestCa};
use mesh_webhook::server::Limits;
use serde_json::{json, Value};

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn junk(&mut self) -> Value {
        match self.below(7) {
            0 => Value::Null,
            1 => json!(self.next() as i64),
            2 => json!(self.below(2) == 0),
            3 => json!(format!("s{}", self.next())),
            4 => json!([self.next() as f64 / 7.0, "x"]),
            5 => json!({"k": self.next()}),
            _ => json!(-1.5e300),
        }
    }
}

fn valid_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"}, "annotations": {}},
        "spec": {"containers": [{"name": "a", "image": "a", "ports": [{"containerPort": 80}]}]}})
}

/// One malformed request: (content type, body).
fn malformed(r: &mut Rng, i: usize) -> (Option<String>, Vec<u8>) {
    let json_ct = Some("application/json".to_string());
    let mut review = review_for(&valid_pod(), &format!("u{i}"), "admission.k8s.io/v1");
    match r.below(14) {
        0 => {
            let n = r.below(200);
            return (json_ct, (0..n).map(|_| r.next() as u8).collect());
        }
        1 => {
            let full = serde_json::to_vec(&review).unwrap();
            let cut = r.below(full.len());
            return (json_ct, full[..cut].to_vec());
        }
        2 => review["apiVersion"] = r.junk(),
        3 => review["kind"] = r.junk(),
        4 => review["request"] = r.junk(),
        5 => {
            let j = r.junk();
            match j {
                Value::String(_) => {
                    review["request"].as_object_mut().unwrap().remove("uid");
                }
                other => review["request"]["uid"] = other,
            };
        }
        6 => {
            review["request"]["kind"]["kind"] = json!(r.pick(&["Service", "Deployment", "", "pod"]))
        }
        7 => review["request"]["object"]["kind"] = json!(r.pick(&["Service", "ConfigMap", "Pods"])),
        8 => {
            review["request"]["object"]["spec"]["containers"] = r
                .pick(&[
                    json!(7),
                    json!("c"),
                    json!({"name": "a"}),
                    json!([1, 2]),
                    json!([{}]),
                    json!([{"name": 5}]),
                ])
                .clone()
        }
        9 => {
            let j = match r.junk() {
                Value::String(_) | Value::Null => json!(42),
                other => other,
            };
            review["request"]["object"]["metadata"]["annotations"]["x"] = j;
        }
        10 => {
            let (key, vals): (&str, &[&str]) = *r.pick(&[
                (
                    "traffic.sidecar.istio.io/includeInboundPorts",
                    &["70000", "0", "abc", "1,,2", "-5"][..],
                ),
                (
                    "traffic.sidecar.istio.io/excludeInboundPorts",
                    &["70000", "*", "x"][..],
                ),
                (
                    "traffic.sidecar.istio.io/excludeOutboundPorts",
                    &["65536,80", "bad"][..],
                ),
                (
                    "traffic.sidecar.istio.io/includeOutboundIPRanges",
                    &["1.2.3.4/99", "abc", "10.0.0.0"][..],
                ),
                (
                    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                    &["*", "::/129"][..],
                ),
                ("status.sidecar.istio.io/port", &["99999", "port"][..]),
                (
                    "sidecar.istio.io/interceptionMode",
                    &["MAGIC", "redirect"][..],
                ),
                ("sidecar.istio.io/proxyCPU", &["lots", "1 core"][..]),
                ("sidecar.istio.io/nativeSidecar", &["maybe"][..]),
                ("sidecar.istio.io/userVolume", &["{not json"][..]),
            ]);
            review["request"]["object"]["metadata"]["annotations"][key] = json!(r.pick(vals));
        }
        11 => {
            let ct = r.pick(&[
                "text/plain",
                "application/yaml",
                "",
                "application/jsonx",
                "multipart/form-data",
            ]);
            return (Some(ct.to_string()), serde_json::to_vec(&review).unwrap());
        }
        12 => {
            let depth = 200 + r.below(5000);
            return (
                json_ct,
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
            );
        }
        _ => {
            review["request"]["object"]
                .as_object_mut()
                .unwrap()
                .remove("spec");
        }
    }
    (json_ct, serde_json::to_vec(&review).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_reviews() {
    let ca = TestCa::new("ca");
    let (cert, key) = ca.serving();
    let srv = TestServer::start(&cert, &key, "", Limits::default()).await;
    let mut tasks = Vec::new();
    for worker in 0..4u64 {
        let (addr, ca_pem) = (srv.addr, ca.cert_pem.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ (worker + 1));
            let mut c = Client::connect(addr, &ca_pem).await.unwrap();
            let mut reconnects = 0;
            for i in 0..2500 {
                let (ct, body) = malformed(&mut r, i);
                let got = match c.try_request(ct.as_deref(), body.clone()).await {
                    Some(x) => x,
                    None => {
                        reconnects += 1;
                        c = Client::connect(addr, &ca_pem).await.unwrap();
                        c.try_request(ct.as_deref(), body.clone())
                            .await
                            .expect("server answers")
                    }
                };
                let (status, resp) = got;
                let what = format!(
                    "worker {worker} #{i}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                );
                if (400..500).contains(&status) {
                    continue;
                }
                assert_eq!(status, 200, "{what}");
                let v: Value = serde_json::from_slice(&resp).unwrap();
                assert_eq!(
                    v["response"]["allowed"],
                    false,
                    "{what} -> {}",
                    &v.to_string()[..200]
                );
                assert!(v["response"].get("patch").is_none(), "{what}");
                assert!(
                    v["response"]["status"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "{what}"
                );
            }
            reconnects
        }));
    }
    let mut reconnects = 0;
    for t in tasks {
        reconnects += t.await.unwrap();
    }
    assert!(reconnects < 100, "{reconnects} connections dropped");

    let mut c = Client::connect(srv.addr, &ca.cert_pem).await.unwrap();
    let pod = valid_pod();
    let r = c
        .post_json(&review_for(&pod, "after", "admission.k8s.io/v1"))
        .await;
    assert_eq!(r["response"]["allowed"], true);
    assert_eq!(
        apply_response(&pod, &r)["spec"]["initContainers"][1]["name"],
        "istio-proxy"
    );
}
