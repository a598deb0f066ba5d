//! The Bookinfo side of the test: the pods and URLs it calls and the traffic
//! on each edge of Kiali's graph. A leaf module (the mesh only), so the
//! Prometheus process can take its namespace without a cycle.

use crate::common::Local;

pub const PRODUCTPAGE: &str = "productpage-v1-0";
pub const REVIEWS_V2: &str = "reviews-v2-0";
pub const NS: &str = "default";

/// A TCP Service in front of ratings: its port name makes both sidecars proxy
/// it as opaque TCP (the echo app answers the HTTP inside).
pub const RATINGS_TCP: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ratings-tcp\n  labels: {app: ratings}\nspec:\n  selector: {app: ratings}\n  ports:\n  - {name: tcp-ratings, port: 9079, targetPort: 9080}\n";

pub const DETAILS_URL: &str = "http://details:9080/details/0";
pub const REVIEWS_URL: &str = "http://reviews:9080/reviews/0";
pub const RATINGS_URL: &str = "http://ratings:9080/ratings/0";
pub const RATINGS_TCP_URL: &str = "http://ratings-tcp:9079/ratings/0";

/// `n` requests from `pod` to `url`, all answered `code`.
pub fn traffic(mesh: &Local, pod: &str, url: &str, n: usize, extra: &[&str], code: u16) {
    let res = mesh.calls(pod, url, n, extra);
    assert!(res.iter().all(|(c, _)| *c == code), "{url}: {res:?}");
}

/// `n` calls on each edge: productpage → details and reviews, reviews-v2 →
/// ratings (answered, and aborted for jason) and one connection at a time to
/// ratings-tcp.
pub fn edges(mesh: &Local, n: usize) {
    let jason = ["-H", "end-user: jason"];
    traffic(mesh, PRODUCTPAGE, DETAILS_URL, n, &[], 200);
    traffic(mesh, PRODUCTPAGE, REVIEWS_URL, n, &[], 200);
    traffic(mesh, REVIEWS_V2, RATINGS_URL, n, &[], 200);
    traffic(mesh, REVIEWS_V2, RATINGS_URL, n, &jason, 500);
    for _ in 0..n {
        traffic(mesh, REVIEWS_V2, RATINGS_TCP_URL, 1, &[], 200);
    }
}
