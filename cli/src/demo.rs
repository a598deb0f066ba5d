//! `meshctl demo`: the local mesh demo on the embedded default. Brings up Istio's
//! Bookinfo sample (its namespace labelled `istio-injection=enabled`) with
//! `meshctl local` and the ingress gateway, applies Istio's
//! `destination-rule-all.yaml` and `bookinfo-gateway.yaml`, and shows what a
//! user would see from this host, through the gateway's published port:
//! `/productpage` answered by productpage, then (with the `bookinfo`
//! VirtualService extended by a `/reviews` route) where 100 calls to reviews
//! landed under an 80/20 split, and `end-user: jason` routed to v2.
//! Everything is removed at the end unless `--keep`.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::local;

const FILES: [(&str, &str); 5] = [
    (
        "namespace.yaml",
        include_str!("../../samples/bookinfo/platform/namespace.yaml"),
    ),
    (
        "bookinfo.yaml",
        include_str!("../../samples/bookinfo/platform/bookinfo.yaml"),
    ),
    (
        "destination-rule-all.yaml",
        include_str!("../../samples/bookinfo/networking/destination-rule-all.yaml"),
    ),
    (
        "bookinfo-gateway.yaml",
        include_str!("../../samples/bookinfo/networking/bookinfo-gateway.yaml"),
    ),
    ("bookinfo-reviews-split.yaml", REVIEWS_SPLIT),
];

/// `bookinfo-gateway.yaml`'s VirtualService with `/reviews` exposed too: jason
/// to v2, everyone else 80% v1 / 20% v2 (Istio's reviews rules, at the gateway).
const REVIEWS_SPLIT: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts: [\"*\"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {exact: /productpage}
    - uri: {prefix: /static}
    - uri: {exact: /login}
    - uri: {exact: /logout}
    - uri: {prefix: /api/v1/products}
    route:
    - destination: {host: productpage, port: {number: 9080}}
  - match:
    - uri: {prefix: /reviews}
      headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - match:
    - uri: {prefix: /reviews}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
";

/// The gateway pod whose config the demo waits for.
const GATEWAY_POD: &str = "istio-ingressgateway-0";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Calls through the ingress gateway to reviews.
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Leave the mesh running (`meshctl local --name demo down` removes it).
    #[arg(long)]
    keep: bool,
    /// Where the local mesh keeps its state.
    #[arg(long, default_value = "/run/meshctl-local")]
    root: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.root.join("demo-inputs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = |name: &str| dir.join(name);
    for (name, text) in FILES {
        std::fs::write(path(name), text).with_context(|| format!("writing {name}"))?;
    }
    let session = local::Session::new(&args.root, "demo");
    println!("[1/4] bringing up Bookinfo and the ingress gateway with meshctl local (namespace default has istio-injection=enabled)");
    session.up(
        &[
            path("namespace.yaml"),
            path("bookinfo.yaml"),
            path("destination-rule-all.yaml"),
        ],
        "ingress",
    )?;
    let result = (|| {
        let ingress = session.service_url("istio-ingressgateway", "istio-system", 80)?;
        println!("[2/4] applying bookinfo-gateway.yaml; the ingress gateway is published at http://{ingress}");
        session.apply_and_wait(&path("bookinfo-gateway.yaml"), GATEWAY_POD)?;
        let (code, pod) = session.host_get(&format!("http://{ingress}/productpage"))?;
        let Some(pod) = pod.filter(|_| code == 200) else {
            bail!(
                "GET http://{ingress}/productpage from this host: {}, not productpage's answer \
                 (with --keep, `meshctl local --name demo logs {GATEWAY_POD} -n istio-system -c istio-proxy` shows the gateway's log)",
                if code == 0 { "no HTTP answer".to_string() } else { format!("status {code}") }
            );
        };
        println!("      curl http://{ingress}/productpage → {code}, answered by {pod}");
        let (code, _) = session.host_get(&format!("http://{ingress}/no-such-page"))?;
        println!("      curl http://{ingress}/no-such-page → {code} (no route)");
        println!(
            "[3/4] exposing /reviews at the gateway (80% v1, 20% v2); {} calls from this host to http://{ingress}/reviews/0 — where they landed:",
            args.calls
        );
        session.apply_and_wait(&path("bookinfo-reviews-split.yaml"), GATEWAY_POD)?;
        let url = format!("http://{ingress}/reviews/0");
        let versions = session.host_versions(&url, args.calls, &[])?;
        print_bars(&versions, args.calls);
        println!("[4/4] the user `jason` sees v2, others the split");
        let jason = session.host_versions(&url, 20, &["-H", "end-user: jason"])?;
        println!("      end-user: jason → {}", summary(&jason));
        anyhow::Ok(())
    })();
    if args.keep {
        println!("kept: try `meshctl local --name demo pods`, `curl http://$(meshctl local --name demo service-url istio-ingressgateway -n istio-system --port 80)/productpage`");
    } else {
        session.down()?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn summary(v: &[(String, usize)]) -> String {
    v.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_bars(v: &[(String, usize)], total: usize) {
    for (version, n) in v {
        let width = (n * 50).div_ceil(total.max(1));
        println!(
            "      reviews {version:<10} {:<50} {n:>4} ({:.0}%)",
            "█".repeat(width),
            *n as f64 * 100.0 / total.max(1) as f64
        );
    }
}
