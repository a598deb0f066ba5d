//! `meshctl demo`: the local mesh demo on the embedded default. Brings up Istio's
//! Bookinfo sample (its namespace labelled `istio-injection=enabled`) with
//! `meshctl local`, applies Istio's `destination-rule-all.yaml` and the reviews
//! 80/20 split, and shows what a user would see: where 100 calls from
//! productpage to reviews landed, and `end-user: jason` routed to v2. Everything
//! is removed at the end unless `--keep`.

use std::path::PathBuf;

use anyhow::Context;

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
        "virtual-service-reviews-80-20.yaml",
        include_str!("../../samples/bookinfo/networking/virtual-service-reviews-80-20.yaml"),
    ),
    (
        "virtual-service-reviews-test-v2.yaml",
        include_str!("../../samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml"),
    ),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Calls from productpage to reviews.
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
    println!("[1/4] bringing up Bookinfo with meshctl local (namespace default has istio-injection=enabled)");
    session.up(&[
        path("namespace.yaml"),
        path("bookinfo.yaml"),
        path("destination-rule-all.yaml"),
    ], "ingress")?;
    let result = (|| {
        println!("[2/4] applying virtual-service-reviews-80-20.yaml (reviews: 80% v1, 20% v2)");
        session.apply_and_wait(
            &path("virtual-service-reviews-80-20.yaml"),
            "productpage-v1-0",
        )?;
        println!(
            "[3/4] {} calls from productpage-v1-0 to http://reviews:9080/ — where they landed:",
            args.calls
        );
        let versions = session.versions(
            "productpage-v1-0",
            "http://reviews:9080/reviews/0",
            args.calls,
            &[],
        )?;
        print_bars(&versions, args.calls);
        println!("[4/4] applying virtual-service-reviews-test-v2.yaml: the user `jason` sees v2, others v1");
        session.apply_and_wait(
            &path("virtual-service-reviews-test-v2.yaml"),
            "productpage-v1-0",
        )?;
        let jason = session.versions(
            "productpage-v1-0",
            "http://reviews:9080/reviews/0",
            20,
            &["-H", "end-user: jason"],
        )?;
        let others =
            session.versions("productpage-v1-0", "http://reviews:9080/reviews/0", 20, &[])?;
        println!("      end-user: jason → {}", summary(&jason));
        println!("      anyone else     → {}", summary(&others));
        anyhow::Ok(())
    })();
    if args.keep {
        println!("kept: try `meshctl local --name demo pods`, `meshctl local --name demo exec productpage-v1-0 -- curl -s reviews:9080/`");
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
