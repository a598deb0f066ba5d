//! Istio's Telemetry API through `meshctl local`: a namespace Telemetry turns
//! tracing on at 100 % with a custom tag (every request's spans reach a Zipkin
//! receiver on the node, tagged), a workload-selector Telemetry then sets its
//! workload to 0 % (its requests export nothing, the other proxy keeps 100 %);
//! a Telemetry access-log filter writes only the failing request's line, and
//! an unparseable filter is refused naming it while the last good one stays.

mod common;

use std::collections::BTreeSet;

use common::*;
use mesh_e2e::zipkin::{bind_in, Collector};
use serde_json::Value;

const APPS: &str = SHOP_WEB_AND_CLIENT;

const CLIENT: &str = "shop/client-0";
const WEB: &str = "shop/web-0";

const NAMESPACE_TRACING: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tracing, namespace: shop}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 100
    customTags:
      team: {literal: {value: checkout}}
";

const CLIENT_SILENT: &str = "\
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: client-silent, namespace: shop}
spec:
  selector: {matchLabels: {app: client}}
  tracing:
  - randomSamplingPercentage: 0
";

/// The tracing in `pod`'s running view (its config dump).
fn running_tracing(mesh: &Local, pod: &str) -> Value {
    let dump: Value = serde_json::from_str(&mesh.admin(pod, "15000/config_dump")).unwrap();
    dump["view"]["tracing"].clone()
}

fn url_of(s: &Value) -> &str {
    s["tags"]["http.url"].as_str().unwrap_or("")
}

#[test]
fn telemetry_sets_tracing_per_namespace_then_per_workload() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    let cfg = mesh.file("mesh.yaml", "{}\n");
    mesh.ok(&["up", "--mesh-config", &cfg, "-f", &apps]);

    // The receiver listens on the node, where pods reach the bridge address;
    // the mesh config names it as an extension provider, live.
    let zipkin = Collector::start(bind_in(&mesh.node_netns(), mesh_e2e::harness::GATEWAY));
    let (ip, port) = zipkin.addr.split_once(':').unwrap();
    let with_provider =
        format!("extensionProviders:\n- name: zipkin\n  zipkin: {{service: {ip}, port: {port}}}\n");
    mesh.changed_by("the zipkin provider", &[CLIENT, WEB], || {
        std::fs::write(mesh.root.join(&mesh.name).join("mesh.yaml"), &with_provider).unwrap()
    });
    // A provider alone traces nothing: no Telemetry, no defaultProviders.
    assert_eq!(running_tracing(&mesh, CLIENT)["provider"], Value::Null);

    // The namespace Telemetry: every request sampled, spans tagged.
    let ns = mesh.file("ns-tracing.yaml", NAMESPACE_TRACING);
    mesh.apply(&ns, &[CLIENT, WEB]);
    for pod in [CLIENT, WEB] {
        let t = running_tracing(&mesh, pod);
        assert_eq!(t["sampling"], 100.0, "{pod}: {t}");
        assert_eq!(t["provider"]["address"], zipkin.addr.as_str(), "{pod}: {t}");
    }
    let n = 20;
    let res = mesh.calls(CLIENT, "http://web.shop:80/traced", n, &[]);
    assert!(res.iter().all(|(c, _)| *c == 200), "{res:?}");
    let spans = zipkin.wait_until(2 * n, |s| url_of(s).contains("/traced?call="));
    assert_eq!(spans.len(), 2 * n);
    for kind in ["CLIENT", "SERVER"] {
        let calls: BTreeSet<&str> = spans
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| url_of(s).rsplit("call=").next().unwrap())
            .collect();
        assert_eq!(
            calls.len(),
            n,
            "{kind}: every request sampled once: {calls:?}"
        );
    }
    for s in &spans {
        assert_eq!(s["tags"]["team"], "checkout", "{s}");
    }

    // The workload Telemetry: the client's own requests are sampled at 0 %
    // (and the server follows its decision); the web proxy keeps 100 %.
    let silent = mesh.file("client-silent.yaml", CLIENT_SILENT);
    mesh.apply(&silent, &[CLIENT]);
    assert_eq!(running_tracing(&mesh, CLIENT)["sampling"], 0.0);
    assert_eq!(running_tracing(&mesh, WEB)["sampling"], 100.0);
    let before = zipkin.spans().len();
    let res = mesh.calls(CLIENT, "http://web.shop:80/quiet", n, &[]);
    assert!(res.iter().all(|(c, _)| *c == 200), "{res:?}");
    // A forced trace, exported after the calls above by the same proxies,
    // says the receiver has seen everything they exported.
    mesh.calls(
        CLIENT,
        "http://web.shop:80/forced",
        1,
        &[
            "-H",
            "x-client-trace-id: force",
            "-H",
            "x-request-id: forced-1",
        ],
    );
    zipkin.wait_for("forced-1", 2);
    let quiet: Vec<Value> = zipkin.spans()[before..]
        .iter()
        .filter(|s| url_of(s).contains("/quiet"))
        .cloned()
        .collect();
    assert!(quiet.is_empty(), "spans of unsampled requests: {quiet:?}");

    // A provider the mesh config does not define: the agent rejects the
    // resource naming the provider; the proxies keep what they run.
    let unknown = mesh.file(
        "unknown.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: unknown, namespace: shop}\n\
         spec:\n  selector: {matchLabels: {app: web}}\n  tracing: [{providers: [{name: jaeger}]}]\n",
    );
    mesh.ok(&["apply", "-f", &unknown]);
    let log = mesh.root.join(&mesh.name).join("logs/mesh-agent.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Telemetry/shop/unknown")
            && text.contains("\"jaeger\" names no meshConfig extensionProvider")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let t = running_tracing(&mesh, WEB);
    assert_eq!(t["provider"]["address"], zipkin.addr.as_str(), "{t}");
}

const FAILURES_ONLY: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: failures, namespace: shop}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: 'response.code >= 400'}
";

#[test]
fn telemetry_access_log_filter_logs_only_failures() {
    let mesh = Local::new();
    let apps = mesh.file("apps.yaml", APPS);
    let cfg = mesh.file("mesh.yaml", "{}\n");
    mesh.ok(&["up", "--mesh-config", &cfg, "-f", &apps]);
    let t = mesh.file("failures.yaml", FAILURES_ONLY);
    mesh.apply(&t, &[CLIENT, WEB]);

    let ok = mesh.calls(CLIENT, "http://web.shop:80/fine", 3, &[]);
    assert!(ok.iter().all(|(c, _)| *c == 200), "{ok:?}");
    // 404: not retried, so one request on each side (a 503 would be, by the
    // default retry policy, and the server would log each attempt).
    let bad = mesh.calls(CLIENT, "http://web.shop:80/broken?status=404", 1, &[]);
    assert_eq!(bad[0].0, 404);
    // The failing request's line, on both sides; the successful ones (ended
    // earlier on the same connection) have none.
    for pod in [CLIENT, WEB] {
        let l = mesh.proxy_log_lines(pod, "\"GET /broken?status=404&call=1", 1);
        assert!(l[0].contains(" 404 "), "{}", l[0]);
        mesh.proxy_log_lines(pod, "/fine?call=", 0);
    }

    // An expression outside the supported CEL is refused, naming it; the
    // last good filter stays in force.
    let broken = FAILURES_ONLY.replace("response.code >= 400", "response.code >>= 400");
    let f = mesh.file("broken.yaml", &broken);
    let out = mesh.meshctl(&["apply", "-f", &f]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.accessLogging[0].filter.expression")
            && err.contains("response.code >>= 400"),
        "{err}"
    );
    mesh.calls(CLIENT, "http://web.shop:80/fine-again", 2, &[]);
    mesh.calls(CLIENT, "http://web.shop:80/after?status=404", 1, &[]);
    mesh.proxy_log_lines(CLIENT, "\"GET /after?status=404&call=1", 1);
    mesh.proxy_log_lines(CLIENT, "/fine-again?call=", 0);
}
