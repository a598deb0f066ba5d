//! `POST /validate` end to end over real TLS on loopback with the AdmissionReviews
//! an API server sends: every bookinfo sample (all Istio resources, several API
//! versions) is allowed, a VirtualService with a negative weight is refused with
//! the agent's precise message, a bad DestinationRule too; malformed reviews get
//! HTTP 400 with what is wrong, a wrong Content-Type 415.

mod common;

use common::net::{Client, TestServer};
use common::{docs, TestCa};
use mesh_webhook::server::Limits;
use serde_json::{json, Value};

const BOOKINFO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/samples/bookinfo/networking"
);

fn review(api: &str, uid: &str, op: &str, obj: &Value) -> Value {
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().unwrap_or("");
    json!({"apiVersion": api, "kind": "AdmissionReview", "request": {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
        "name": obj["metadata"]["name"], "namespace": "bookinfo", "operation": op,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
        "object": obj, "oldObject": if op == "UPDATE" { obj.clone() } else { Value::Null },
        "dryRun": false, "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}})
}

async fn post(c: &mut Client, ct: &str, body: Vec<u8>) -> (u16, String) {
    let (s, b) = c.request("POST", "/validate", Some(ct), body).await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_over_https_allows_good_refuses_bad_and_rejects_malformed() {
    let ca = TestCa::new("validate-ca");
    let (cert, key) = ca.serving();
    let srv = TestServer::start(&cert, &key, "", Limits::default()).await;
    let mut c = Client::connect(srv.addr, &ca.cert_pem).await.unwrap();

    // Every bookinfo sample object passes, in both review versions.
    let mut seen = 0;
    for entry in std::fs::read_dir(BOOKINFO).unwrap() {
        let path = entry.unwrap().path();
        for obj in docs(&std::fs::read_to_string(&path).unwrap()) {
            for api in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
                let body = serde_json::to_vec(&review(api, "u-good", "CREATE", &obj)).unwrap();
                let (s, b) = post(&mut c, "application/json", body).await;
                assert_eq!(s, 200, "{b}");
                let r: Value = serde_json::from_str(&b).unwrap();
                assert_eq!(r["apiVersion"], api);
                assert_eq!(r["response"]["uid"], "u-good");
                assert_eq!(
                    r["response"]["allowed"],
                    true,
                    "{}: {}",
                    path.display(),
                    r["response"]["status"]
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 40, "only {seen} sample reviews");

    // A VirtualService with a negative weight, on CREATE and on UPDATE.
    let bad_vs = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 120},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": -20}]}]}});
    for op in ["CREATE", "UPDATE"] {
        let body =
            serde_json::to_vec(&review("admission.k8s.io/v1", "u-bad", op, &bad_vs)).unwrap();
        let (s, b) = post(&mut c, "application/json", body).await;
        assert_eq!(s, 200, "{b}");
        let r: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(r["response"]["allowed"], false);
        assert_eq!(r["response"]["uid"], "u-bad");
        assert_eq!(r["response"]["status"]["code"], 400);
        assert_eq!(
            r["response"]["status"]["message"],
            "configuration is invalid: VirtualService/bookinfo/reviews: \
             spec.http[0].route[1].weight: weight must not be negative (value -20)"
        );
    }
    // DELETE is not checked (as Istio).
    let body =
        serde_json::to_vec(&review("admission.k8s.io/v1", "u-del", "DELETE", &bad_vs)).unwrap();
    let (_, b) = post(&mut c, "application/json", body).await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["response"]["allowed"],
        true
    );

    // A DestinationRule whose field has the wrong type names the path.
    let bad_dr = json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
        "metadata": {"name": "ratings"},
        "spec": {"host": "ratings", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": "many"}}}}});
    let body = serde_json::to_vec(&review(
        "admission.k8s.io/v1beta1",
        "u-dr",
        "CREATE",
        &bad_dr,
    ))
    .unwrap();
    let (_, b) = post(&mut c, "application/json", body).await;
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(r["response"]["allowed"], false);
    let m = r["response"]["status"]["message"].as_str().unwrap();
    assert!(
        m.contains("DestinationRule/bookinfo/ratings")
            && m.contains("spec.trafficPolicy.connectionPool.tcp.maxConnections"),
        "{m}"
    );

    // Malformed reviews: HTTP 400 saying what is wrong.
    for (body, want) in [
        (&b"{not json"[..], "not JSON"),
        (br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview"}"#, "unsupported apiVersion"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "no request"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#, "request.uid"),
    ] {
        let (s, b) = post(&mut c, "application/json", body.to_vec()).await;
        assert_eq!(s, 400, "{b}");
        assert!(b.contains(want), "{b}");
    }
    let (s, b) = post(&mut c, "application/json", Vec::new()).await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = post(&mut c, "text/plain", b"{}".to_vec()).await;
    assert_eq!(s, 415);

    // The connection is still good and /version answers.
    let (s, b) = c.request("GET", "/version", None, vec![]).await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["component"], "mesh-webhook");
}
