//! `meshctl local dashboard` on Bookinfo, read by a real browser (headless
//! Chromium, `--dump-dom` and `--screenshot`): the service graph has the
//! Bookinfo workloads and services, the productpage → reviews edge has a
//! request rate and the mTLS lock, and the traces view shows a trace that the
//! sidecars exported to `meshctl local up`'s embedded collector, with spans of
//! three services (the test propagates the B3 context as Bookinfo's apps do);
//! traffic through the ingress gateway puts the gateway at the graph's left edge.
//! A mesh config with its own tracing backend (or `--no-trace-collector`) gets
//! no collector. Without a cluster, `meshctl dashboard` says so.

mod common;
mod procs;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::page;
use common::page::{attr, edge, num, tags};
use common::*;

const PRODUCTPAGE: &str = "productpage-v1-0";
/// 100 % sampling, no backend: the embedded collector gets every span.
const MESH: &str = "defaultConfig:\n  tracing:\n    sampling: 100\n";
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

/// Runs headless Chromium on `url` with `args` (bounded by `timeout`).
fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let out = Command::new("timeout")
        .args([
            "60",
            "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (tests/install-deps.sh installs it)");
    assert!(out.status.success(), "chromium {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the page must show; the missing parts, named.
fn missing(dom: &str) -> Vec<String> {
    let mut miss = Vec::new();
    let nodes: BTreeSet<String> = tags(dom, "<g class=\"node\"")
        .iter()
        .filter_map(|t| attr(t, "data-id"))
        .collect();
    for n in [
        "workload:default/productpage-v1",
        "workload:default/details-v1",
        "workload:default/reviews-v1",
        "workload:default/reviews-v2",
        "workload:default/reviews-v3",
        "workload:default/ratings-v1",
        "service:default/reviews",
        "service:default/details",
        "service:default/ratings",
    ] {
        if !nodes.contains(n) {
            miss.push(format!("node {n}"));
        }
    }
    let pp = "workload:default/productpage-v1";
    for (from, to, lock) in [
        (pp, "service:default/reviews", true),
        (pp, "service:default/details", true),
        (
            "service:default/reviews",
            "workload:default/reviews-v2",
            true,
        ),
        (
            "workload:default/reviews-v2",
            "service:default/ratings",
            true,
        ),
    ] {
        match edge(dom, from, to, "http") {
            None => miss.push(format!("edge {from} -> {to}")),
            Some(e) => {
                if num(e, "data-rps") <= 0.0 {
                    miss.push(format!("a rate on {from} -> {to}: {e}"));
                }
                if lock
                    && !(attr(e, "data-mtls").as_deref() == Some("true")
                        && e.contains("class=\"lock\""))
                {
                    miss.push(format!("the mTLS lock on {from} -> {to}: {e}"));
                }
                if !e.contains(" rps") {
                    miss.push(format!("the rate label on {from} -> {to}: {e}"));
                }
            }
        }
    }
    // The propagated trace: spans of three services, in one waterfall.
    let trace = tags(dom, "<details class=\"trace\"")
        .into_iter()
        .find(|t| attr(t, "data-trace-id").as_deref() == Some(TRACE));
    match trace {
        None => miss.push(format!("trace {TRACE}")),
        Some(t) => {
            let svcs = attr(t, "data-services").unwrap_or_default();
            for s in ["productpage.default", "reviews.default", "ratings.default"] {
                if !svcs.split(',').any(|x| x == s) {
                    miss.push(format!("service {s} in trace {TRACE} ({svcs})"));
                }
            }
        }
    }
    miss
}

#[test]
fn dashboard_shows_bookinfo_graph_and_traces_in_a_browser() {
    let started = Instant::now();
    let mesh = Local::new();
    let cfg = mesh.file("mesh.yaml", MESH);
    let out = mesh.ok(&[
        "up",
        "--mesh-config",
        &cfg,
        "--gateways",
        "ingress",
        "-f",
        &sample("platform"),
        "-f",
        &sample("networking/bookinfo-gateway.yaml"),
    ]);
    let collector = format!("{}:9411", mesh_e2e::harness::GATEWAY);
    assert!(
        out.contains(&format!(
            "trace collector (Zipkin) listening on {collector}"
        )),
        "{out}"
    );
    // The mesh config the agent reads names the collector, the user's sampling kept.
    let used = std::fs::read_to_string(mesh.root.join(&mesh.name).join("mesh.yaml")).unwrap();
    assert!(
        used.contains(&collector) && used.contains("sampling: 100"),
        "{used}"
    );

    let (dash, line) = procs::spawn(&mut page::command(&mesh, &[]));
    let url = page::url(&line);

    // Traffic: every reviews version, details, and reviews-v2 → ratings.
    let mut versions = BTreeSet::new();
    for _ in 0..10 {
        for (code, r) in mesh.calls(PRODUCTPAGE, "http://reviews:9080/reviews/0", 6, &[]) {
            assert_eq!(code, 200);
            versions.extend(r.and_then(|r| r.version));
        }
        if versions.len() == 3 {
            break;
        }
    }
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert!(mesh
        .calls(PRODUCTPAGE, "http://details:9080/details/0", 3, &[])
        .iter()
        .all(|(c, _)| *c == 200));
    assert!(mesh
        .calls("reviews-v2-0", "http://ratings:9080/ratings/0", 3, &[])
        .iter()
        .all(|(c, _)| *c == 200));
    // One request traced through three services: productpage's app calls
    // reviews in trace TRACE; the reviews pod that answered calls ratings with
    // the context its sidecar handed it.
    let h = |k: &str, v: &str| format!("{k}: {v}");
    let (tid, pid, smp) = (
        h("x-b3-traceid", TRACE),
        h("x-b3-spanid", PARENT),
        h("x-b3-sampled", "1"),
    );
    let r = mesh.calls(
        PRODUCTPAGE,
        "http://reviews:9080/reviews/1",
        1,
        &["-H", &tid, "-H", &pid, "-H", &smp],
    );
    let reply = r[0].1.clone().expect("reviews answered");
    assert_eq!(
        reply.headers.get("x-b3-traceid").map(String::as_str),
        Some(TRACE),
        "{reply:?}"
    );
    let span = reply.headers["x-b3-spanid"].clone();
    let sid = h("x-b3-spanid", &span);
    let r = mesh.calls(
        &reply.pod,
        "http://ratings:9080/ratings/1",
        1,
        &["-H", &tid, "-H", &sid, "-H", &smp],
    );
    assert_eq!(r[0].0, 200);

    // The browser's DOM, until it shows everything (scrapes and span exports
    // are asynchronous), for at most 60 s.
    let profile = tempfile::tempdir().unwrap();
    let dom = page::until(
        Duration::from_secs(60),
        || chromium(profile.path(), &["--dump-dom"], &url),
        missing,
    );
    // No edge that had no traffic: productpage never called ratings.
    assert!(
        edge(
            &dom,
            "workload:default/productpage-v1",
            "service:default/ratings",
            "http"
        )
        .is_none(),
        "{dom}"
    );
    // The waterfall rows: each span with service, name and duration.
    let t = &dom[dom.find(&format!("data-trace-id=\"{TRACE}\"")).unwrap()..];
    let t = &t[..t.find("</details>").unwrap()];
    let spans = tags(t, "<div class=\"span\"");
    assert!(spans.len() >= 4, "{t}");
    for s in &spans {
        assert!(
            attr(s, "data-name").is_some_and(|n| !n.is_empty() && n != "-"),
            "{s}"
        );
        assert!(
            attr(s, "data-duration-us").is_some_and(|d| d.parse::<u64>().unwrap() > 0),
            "{s}"
        );
    }
    // The workloads table: productpage sends, reviews-v2 receives.
    let row = |id: &str, a: &str| -> f64 {
        tags(&dom, "<tr id=")
            .into_iter()
            .find(|t| attr(t, "data-id").as_deref() == Some(id))
            .and_then(|t| attr(t, a))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no row {id}"))
    };
    assert!(row("workload:default/productpage-v1", "data-out-rps") > 0.0);
    assert!(row("workload:default/reviews-v2", "data-in-rps") > 0.0);

    // A screenshot, as a browser renders it.
    let png = profile.path().join("dashboard.png");
    chromium(
        profile.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,900",
            "--hide-scrollbars",
        ],
        &url,
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("MESH_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }

    // Traffic from this host through the ingress gateway: the gateway is a
    // node of its own kind at the graph's left edge, its edge over mTLS.
    let addr = mesh
        .ok(&[
            "service-url",
            "istio-ingressgateway",
            "-n",
            "istio-system",
            "--port",
            "80",
        ])
        .trim()
        .to_string();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            "--max-time",
            "30",
        ])
        .arg(format!("http://{addr}/productpage?call=[1-5]"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200\n".repeat(5),
        "{}",
        text(&out)
    );
    let gw = "workload:istio-system/istio-ingressgateway";
    page::until(
        Duration::from_secs(60),
        || chromium(profile.path(), &["--dump-dom"], &url),
        |dom| {
            let mut miss = Vec::new();
            let node = tags(dom, "<g class=\"node\"")
                .into_iter()
                .find(|t| attr(t, "data-id").as_deref() == Some(gw));
            if node.and_then(|t| attr(t, "data-kind")).as_deref() != Some("gateway") {
                miss.push(format!("gateway node {gw}: {node:?}"));
            }
            match edge(dom, gw, "service:default/productpage", "http") {
                Some(e)
                    if num(e, "data-rps") > 0.0
                        && attr(e, "data-mtls").as_deref() == Some("true") => {}
                e => miss.push(format!(
                    "gateway -> productpage with a rate over mTLS: {e:?}"
                )),
            }
            if !dom.contains("<g class=\"namespace\" data-namespace=\"istio-system\">") {
                miss.push("a band for namespace istio-system".into());
            }
            // Left edge: no node starts left of the gateway.
            let xs: Vec<(String, f64)> = tags(dom, "<g class=\"node\"")
                .into_iter()
                .filter_map(|t| {
                    let id = attr(t, "data-id")?;
                    let at = dom.find(t)?;
                    let rect = &dom[at..];
                    let x = attr(&rect[rect.find("<rect")?..], "x")?.parse().ok()?;
                    Some((id, x))
                })
                .collect();
            let gx = xs.iter().find(|(id, _)| id == gw).map(|(_, x)| *x);
            if gx.is_none_or(|g| xs.iter().any(|(_, x)| *x < g)) {
                miss.push(format!("the gateway at the left edge: {xs:?}"));
            }
            miss
        },
    );

    drop(dash);
    let name = mesh.name.clone();
    drop(mesh);
    assert!(netns_left(&format!("ml-{name}-")).is_empty());
    eprintln!("local_dashboard: {:?}", started.elapsed());
}

#[test]
fn without_a_cluster_the_cluster_dashboard_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["dashboard", "--port", "0"])
        .env("KUBECONFIG", procs::NO_CLUSTER)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no Kubernetes cluster reachable for `meshctl dashboard`")
            && err.contains("meshctl local dashboard"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing served: {}", text(&out));
}

#[test]
fn a_tracing_backend_of_the_users_own_wins_over_the_collector() {
    let state = |mesh: &Local| -> serde_json::Value {
        let p = mesh.root.join(&mesh.name).join("state.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let used = |mesh: &Local| {
        std::fs::read_to_string(mesh.root.join(&mesh.name).join("mesh.yaml")).unwrap()
    };
    // A zipkin address in the mesh config: no collector, the config as written.
    let mesh = Local::new();
    let own = "defaultConfig:\n  tracing:\n    zipkin: {address: zipkin.obs:9411}\n";
    let cfg = mesh.file("mesh.yaml", own);
    let ns = sample("platform/namespace.yaml");
    let out = mesh.ok(&["up", "--mesh-config", &cfg, "-f", &ns]);
    assert!(!out.contains("trace collector"), "{out}");
    assert_eq!(used(&mesh), own);
    assert!(state(&mesh)["collector"].is_null());
    // The dashboard then has no trace source of its own, and says so.
    let (dash, line) = procs::spawn(&mut page::command(&mesh, &[]));
    let html = page::get(&page::url(&line));
    assert!(
        html.contains("traces: none (no collector; pass --zipkin URL)"),
        "{html}"
    );
    drop(dash);
    // A URL it cannot use: refused before anything is served, naming flag and value.
    let out = mesh.meshctl(&["dashboard", "--prometheus", "https://prom:9090"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--prometheus \"https://prom:9090\": only http://HOST:PORT[/PATH] URLs"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
    drop(mesh);

    // --no-trace-collector: none either, and no backend added.
    let mesh = Local::new();
    let out = mesh.ok(&["up", "--no-trace-collector", "-f", &ns]);
    assert!(!out.contains("trace collector"), "{out}");
    assert_eq!(used(&mesh), "");
    assert!(state(&mesh)["collector"].is_null());
}
