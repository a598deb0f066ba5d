//! Istio's Bookinfo Gateway API samples on `meshctl local` (our YAML in
//! `samples/bookinfo/gateway-api/`): the Gateway of class `istio` is deployed as
//! `bookinfo-gateway-istio` with port 80 published on the host, its HTTPRoute
//! sends productpage's paths there (200 from the host, 404 elsewhere); the
//! reviews HTTPRoute with the `reviews` Service as parent splits calls 90/10
//! between reviews-v1 and reviews-v2, within statistical bounds.

mod common;

use common::*;
use std::time::{Duration, Instant};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../samples/bookinfo/gateway-api"
);
const CLIENT: &str = "productpage-v1-0";
const REVIEWS: &str = "http://reviews:9080/reviews/0";

/// The agent's status of `kind/ns/name` has `Accepted=True` for `parent`.
fn accepted(mesh: &Local, obj: &str, parent: &str) -> bool {
    let out = mesh.meshctl(&["status", obj]);
    let Ok(st) = serde_yaml_ng::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    st["parents"].as_array().into_iter().flatten().any(|p| {
        p["parentRef"]["name"] == parent
            && p["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Accepted" && c["status"] == "True")
    })
}

/// Polls `f` (bounded: 30 s) until it returns `Some`.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn bookinfo_gateway_api_ingress_and_reviews_90_10() {
    let mesh = Local::up(&[
        "-f",
        &sample("platform"),
        "-f",
        &format!("{DATA}/reviews-versions.yaml"),
        "-f",
        &format!("{DATA}/bookinfo-gateway.yaml"),
    ]);
    let pods = mesh.ok(&["pods"]);
    assert!(pods.contains("bookinfo-gateway-istio-0"), "{pods}");
    let addr = mesh
        .ok(&["service-url", "bookinfo-gateway-istio", "--port", "80"])
        .trim()
        .to_string();

    // productpage through the Gateway API gateway, from the host.
    eventually("the bookinfo route to be accepted", || {
        accepted(&mesh, "httproute/default/bookinfo", "bookinfo-gateway").then_some(())
    });
    let r = eventually("productpage through the gateway", || {
        let r = curl(&[&format!("http://{addr}/productpage")]);
        (r.0 == 200).then_some(r)
    });
    assert_eq!(r.1.expect("echo reply").pod, "productpage-v1-0");
    let (code, reply, _) = curl(&[&format!("http://{addr}/static/style.css")]);
    assert_eq!(
        (code, reply.map(|r| r.pod)),
        (200, Some("productpage-v1-0".into()))
    );
    // Paths the route does not list are not served.
    assert_eq!(curl(&[&format!("http://{addr}/reviews/0")]).0, 404);

    // Without a route, reviews is balanced over its three versions; the 90/10
    // route (parent: the reviews Service) leaves v3 out once applied.
    mesh.ok(&["apply", "-f", &format!("{DATA}/route-reviews-90-10.yaml")]);
    eventually("the reviews route to be accepted", || {
        accepted(&mesh, "httproute/default/reviews", "reviews").then_some(())
    });
    // Applied: 30 calls without v3 (chance without the route: (2/3)^30 < 1e-5).
    eventually("reviews calls without v3", || {
        let v = versions(&mesh.calls(CLIENT, REVIEWS, 30, &[]));
        (!v.contains_key("v3") && v.keys().all(|k| k == "v1" || k == "v2")).then_some(())
    });
    let n = 200;
    let res = mesh.calls(CLIENT, REVIEWS, n, &[]);
    let v = versions(&res);
    assert!(res.iter().all(|(c, _)| *c == 200), "{v:?}");
    let v1 = v.get("v1").copied().unwrap_or(0);
    let v2 = v.get("v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, n, "{v:?}");
    assert_split(v1, n, 0.9, "reviews-v1");
    // P(no v2 in 200 calls at 10 %) = 0.9^200 < 1e-9.
    assert!(v2 >= 1, "{v:?}");
}
