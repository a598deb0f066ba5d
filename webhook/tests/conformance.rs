//! Conformance with Istio's injector: every case of
//! `shared/conformance/istio-inject/cases.json` goes through `kube-inject` and the
//! webhook path (AdmissionReview in, JSONPatch out, applied to the pod), and the
//! result is compared with Istio's golden output.
//!
//! Compared (behaviour users depend on): inject/skip/error; init-container and
//! container names in order (so native-sidecar placement); `restartPolicy: Always`
//! on a native `istio-proxy`; volume names; the istio-iptables flags of
//! `istio-init`; the init/validation and proxy security contexts; proxy
//! resources (quantities compared by value) and readiness/startup probes; whether
//! the proxy holds the app (postStart hook); every app container's probes and
//! lifecycle hooks; `ISTIO_KUBE_APP_PROBERS` (as JSON); the tlsMode and
//! canonical-name/revision labels; the default-container annotation; image pull
//! secrets; and documents that are not workloads (compared parsed).
//!
//! Ignored, see [`IGNORED`] for why: images and pull policy, the proxy's
//! command/args/env (other than `ISTIO_KUBE_APP_PROBERS`), ports, volume mounts and
//! lifecycle argv, the istio-iptables `--log_output_level` flag, the args of
//! `istio-validation` (our `mesh-cni validate` takes only its own flags),
//! Istio-only volumes, and the `sidecar.istio.io/status`, `istio.io/rev` and
//! `prometheus.io/*` annotations.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{apply_response, as_pod_of, docs, pods, read, review_for, workload_pods};
use mesh_api::meshconfig::{MeshConfig, NativeSidecars, PullPolicy};
use mesh_api::{InterceptionMode, Selection};
use mesh_webhook::admission::{review, V1};
use mesh_webhook::kube_inject::kube_inject;
use mesh_webhook::InjectContext;
use serde_json::Value;

/// What the comparison leaves out, and why.
const IGNORED: &[(&str, &str)] = &[
    (
        "image, imagePullPolicy",
        "we ship one image of our own binaries",
    ),
    (
        "istio-proxy command/args/env/ports/volumeMounts/lifecycle argv",
        "Istio's pilot-agent/Envoy interface; ours is mesh-proxy's",
    ),
    (
        "istio-iptables --log_output_level, --run-validation --skip-rule-apply",
        "pilot-agent logging flag; validation is our `mesh-cni validate` subcommand",
    ),
    (
        "volumes workload-socket, credential-socket, workload-certs, istio-ca-crl",
        "Istio's SPIFFE workload-API sockets and CRL; our agent delivers certs itself",
    ),
    (
        "annotations sidecar.istio.io/status, istio.io/rev, prometheus.io/*",
        "Istio-specific bookkeeping; Istio's own webhook test drops the status too",
    ),
];

const ISTIO_ONLY_VOLUMES: [&str; 4] = [
    "workload-socket",
    "credential-socket",
    "workload-certs",
    "istio-ca-crl",
];

/// Maps a case's settings onto our MeshConfig, or says why we cannot.
fn settings(case: &Value) -> Result<(MeshConfig, InjectContext), String> {
    let mut m = MeshConfig::default();
    let mut ctx = InjectContext::default();
    let s = &case["settings"];
    for flag in s["setFlags"].as_array().into_iter().flatten() {
        let flag = flag.as_str().unwrap();
        let (k, v) = flag.split_once('=').unwrap();
        let ports = |v: &str| {
            v.split(',')
                .map(|p| p.parse().unwrap())
                .collect::<Vec<u16>>()
        };
        match k {
            "components.cni.enabled" => m.cni.enabled = v == "true",
            "values.cni.provider" if v == "default" => {}
            "values.cni.provider" => {
                return Err(format!("{flag}: multus network annotation not implemented"))
            }
            "values.global.network" => {
                return Err(format!(
                    "{flag}: multi-network (topology.istio.io/network) not implemented"
                ))
            }
            "values.global.mountMtlsCerts" => {
                return Err(format!(
                    "{flag}: legacy file-mounted istio-certs not implemented"
                ))
            }
            "values.global.proxy.image" => m.images.proxy = v.into(),
            // One image holds every binary, and images are not compared.
            "values.global.proxy_init.image" => {}
            "values.global.imagePullPolicy" => {
                m.images.pull_policy = Some(match v {
                    "Always" => PullPolicy::Always,
                    "Never" => PullPolicy::Never,
                    _ => PullPolicy::IfNotPresent,
                })
            }
            "values.global.proxy.includeIPRanges" => {
                m.redirect.include_ip_ranges =
                    Selection::Only(v.split(',').map(|c| c.parse().unwrap()).collect())
            }
            "values.global.proxy.excludeIPRanges" => {
                m.redirect.exclude_ip_ranges = v.split(',').map(|c| c.parse().unwrap()).collect()
            }
            "values.global.proxy.excludeInboundPorts" => {
                m.redirect.exclude_inbound_ports = ports(v)
            }
            "values.global.proxy.statusPort" => {
                m.redirect.status_port = Some(v.parse().unwrap()).filter(|p| *p != 0)
            }
            "values.global.proxy.readinessInitialDelaySeconds" => {
                m.proxy.readiness_initial_delay_seconds = v.parse().unwrap()
            }
            "values.global.proxy.readinessPeriodSeconds" => {
                m.proxy.readiness_period_seconds = v.parse().unwrap()
            }
            "values.global.proxy.readinessFailureThreshold" => {
                m.proxy.readiness_failure_threshold = v.parse().unwrap()
            }
            "values.global.proxy.holdApplicationUntilProxyStarts" => {
                m.hold_application_until_proxy_starts = v == "true"
            }
            _ => panic!("unmapped setFlag {flag}: classify it"),
        }
    }
    if let Some(f) = s["inFilePath"].as_str() {
        let iop = docs(&read(f)).remove(0);
        let values = &iop["spec"]["values"];
        if values["sidecarInjectorWebhook"]["templates"].is_object() {
            return Err(format!("{f}: custom injection templates not implemented"));
        }
        if let Some(secrets) = values["global"]["imagePullSecrets"].as_array() {
            m.images.pull_secrets = secrets
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
        }
        // podDNSSearchNamespaces: cases.json notes the templates no longer use it.
        if let Some(res) = values["global"]["proxy"]["resources"].as_object() {
            for (kind, map) in res {
                let target = if kind == "limits" {
                    &mut m.proxy.resources.limits
                } else {
                    &mut m.proxy.resources.requests
                };
                for (name, q) in map.as_object().unwrap() {
                    match q.as_str() {
                        Some(q) => target.insert(name.clone(), q.into()),
                        None => target.remove(name),
                    };
                }
            }
        }
    }
    for (k, v) in s["mesh"].as_object().into_iter().flatten() {
        match k.as_str() {
            "defaultConfig.interceptionMode" => {
                assert_eq!(v, "TPROXY");
                m.default_config.interception_mode = Some(InterceptionMode::Tproxy)
            }
            "defaultConfig.drainDuration" => {
                m.default_config.drain_duration = Some(v.as_str().unwrap().into())
            }
            k if k.starts_with("defaultConfig.proxyMetadata.") => {
                let key = k.trim_start_matches("defaultConfig.proxyMetadata.");
                m.default_config
                    .proxy_metadata
                    .insert(key.into(), v.as_str().unwrap().into());
            }
            "defaultConfig.tracing" => {
                return Err("mesh defaultConfig.tracing: tracing config not modelled".into())
            }
            "inboundTrafficPolicy.mode" => {
                return Err("mesh inboundTrafficPolicy.mode=LOCALHOST not modelled".into())
            }
            "extensionProviders[+]" => {
                return Err("mesh extensionProviders: telemetry providers not modelled".into())
            }
            _ => panic!("unmapped mesh setting {k}: classify it"),
        }
    }
    for (k, v) in s["env"].as_object().into_iter().flatten() {
        match (k.as_str(), v.as_str().unwrap()) {
            ("ENABLE_NATIVE_SIDECARS", "false") => m.native_sidecars = NativeSidecars::Off,
            ("COMPLIANCE_POLICY", p) => {
                return Err(format!("COMPLIANCE_POLICY={p}: Go FIPS env not applicable"))
            }
            ("PLATFORM", p) => {
                return Err(format!(
                    "PLATFORM={p}: OpenShift namespace UID ranges are not read"
                ))
            }
            other => panic!("unmapped env {other:?}"),
        }
    }
    if let Some(nodes) = s["nodes"].as_array() {
        ctx.min_kubelet_version = nodes
            .iter()
            .map(|n| {
                let v = n.as_str().unwrap().trim_start_matches('v');
                let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            })
            .min();
    }
    // `istio.io/reroute-virtual-interfaces` is not among the traffic annotations
    // mesh_api::RedirectParams reads; the injector must not parse traffic
    // annotations itself (the CNI plugin would disagree), so these wait for mesh-api.
    if read(case["input"].as_str().unwrap()).contains("istio.io/reroute-virtual-interfaces") {
        return Err("istio.io/reroute-virtual-interfaces: not read by mesh_api::RedirectParams::for_pod yet".into());
    }
    // Input-level feature: non-sidecar templates.
    let input = read(case["input"].as_str().unwrap());
    for d in docs(&input) {
        for p in pods(&d) {
            if let Some(t) = p["metadata"]["annotations"]["inject.istio.io/templates"].as_str() {
                if t.split(',')
                    .any(|t| !["sidecar", "gateway"].contains(&t.trim()))
                {
                    return Err(format!(
                        "inject.istio.io/templates={t}: only the sidecar and gateway templates are implemented (others are refused with an error naming the template)"
                    ));
                }
            }
        }
    }
    Ok((m, ctx))
}

fn quantity(q: &Value) -> f64 {
    let s = match q {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let n = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, suf) = s.split_at(n);
    let mult = match suf {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("quantity suffix {other}"),
    };
    num.parse::<f64>().unwrap() * mult
}

fn resources(r: &Value) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for kind in ["requests", "limits"] {
        for (k, v) in r[kind].as_object().into_iter().flatten() {
            out.insert(format!("{kind}.{k}"), (quantity(v) * 1000.0).round() as i64);
        }
    }
    out
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn find<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
}

fn env(c: &Value, name: &str) -> Option<Value> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(|v| serde_json::from_str(v).expect("probers are JSON"))
}

/// The istio-iptables flags of an init container, both dialects normalised.
fn flags(c: &Value) -> Vec<String> {
    let args: Vec<String> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    match args.first().map(String::as_str) {
        Some("istio-iptables") | Some("redirect") | Some("validate") => args[1..]
            .iter()
            .filter(|a| {
                !a.starts_with("--log_output_level")
                    && *a != "--run-validation"
                    && *a != "--skip-rule-apply"
            })
            .cloned()
            .collect(),
        _ => args, // a user's own args override the template
    }
}

/// Every behavioural difference between our pod and Istio's.
fn compare(ours: &Value, istio: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut check = |what: &str, a: Value, b: Value| {
        if a != b {
            diffs.push(format!("{what}: ours {a} istio {b}"));
        }
    };
    let st = "sidecar.istio.io/status";
    check(
        "injected",
        Value::Bool(ours["metadata"]["annotations"][st].is_string()),
        Value::Bool(istio["metadata"]["annotations"][st].is_string()),
    );
    check(
        "initContainers",
        names(&ours["spec"]["initContainers"]).into(),
        names(&istio["spec"]["initContainers"]).into(),
    );
    check(
        "containers",
        names(&ours["spec"]["containers"]).into(),
        names(&istio["spec"]["containers"]).into(),
    );
    let vols = |p: &Value| -> BTreeSet<String> {
        names(&p["spec"]["volumes"])
            .into_iter()
            .filter(|n| !ISTIO_ONLY_VOLUMES.contains(&n.as_str()))
            .collect()
    };
    check(
        "volumes",
        serde_json::json!(vols(ours)),
        serde_json::json!(vols(istio)),
    );
    for l in [
        "security.istio.io/tlsMode",
        "service.istio.io/canonical-name",
        "service.istio.io/canonical-revision",
    ] {
        check(
            l,
            ours["metadata"]["labels"][l].clone(),
            istio["metadata"]["labels"][l].clone(),
        );
    }
    let dc = "kubectl.kubernetes.io/default-container";
    check(
        dc,
        ours["metadata"]["annotations"][dc].clone(),
        istio["metadata"]["annotations"][dc].clone(),
    );
    check(
        "imagePullSecrets",
        names(&ours["spec"]["imagePullSecrets"]).into(),
        names(&istio["spec"]["imagePullSecrets"]).into(),
    );
    for init in ["istio-init", "istio-validation"] {
        if let (Some(a), Some(b)) = (find(ours, init), find(istio, init)) {
            if init == "istio-init" {
                check(&format!("{init} flags"), flags(a).into(), flags(b).into());
            }
            check(
                &format!("{init} securityContext"),
                a["securityContext"].clone(),
                b["securityContext"].clone(),
            );
        }
    }
    if let (Some(a), Some(b)) = (find(ours, "istio-proxy"), find(istio, "istio-proxy")) {
        for f in [
            "restartPolicy",
            "securityContext",
            "readinessProbe",
            "startupProbe",
        ] {
            check(&format!("istio-proxy {f}"), a[f].clone(), b[f].clone());
        }
        check(
            "istio-proxy resources",
            serde_json::json!(resources(&a["resources"])),
            serde_json::json!(resources(&b["resources"])),
        );
        check(
            "istio-proxy holds app",
            a["lifecycle"]["postStart"].is_object().into(),
            b["lifecycle"]["postStart"].is_object().into(),
        );
        check(
            "ISTIO_KUBE_APP_PROBERS",
            env(a, "ISTIO_KUBE_APP_PROBERS").into(),
            env(b, "ISTIO_KUBE_APP_PROBERS").into(),
        );
    }
    for c in istio["spec"]["containers"]
        .as_array()
        .into_iter()
        .chain(istio["spec"]["initContainers"].as_array())
        .flatten()
    {
        let n = c["name"].as_str().unwrap_or_default();
        if n.starts_with("istio-") {
            continue;
        }
        let Some(o) = find(ours, n) else { continue };
        for f in [
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
        ] {
            check(&format!("{n} {f}"), o[f].clone(), c[f].clone());
        }
    }
    diffs
}

struct Tally {
    kube_inject: usize,
    webhook: usize,
    skipped: Vec<String>,
    failures: Vec<String>,
}

fn run_case(case: &Value, t: &mut Tally) {
    let id = format!(
        "{}[{}] {}",
        case["test"].as_str().unwrap(),
        case["index"],
        case["input"].as_str().unwrap()
    );
    let (mesh, ctx) = match settings(case) {
        Ok(x) => x,
        Err(why) => return t.skipped.push(format!("{id}: {why}")),
    };
    let input = read(case["input"].as_str().unwrap());
    let expect = case["expect"].as_str().unwrap();
    let by = |p: &str| {
        case["checked_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == p)
    };
    let mut fail = |m: String| t.failures.push(format!("{id}: {m}"));

    // kube-inject path.
    if by("kube-inject") {
        t.kube_inject += 1;
        match (kube_inject(&input, &mesh, &ctx), expect) {
            (Err(e), "error") => {
                let want = case["error_contains"].as_str().unwrap();
                if !e.to_string().to_lowercase().contains(want) {
                    fail(format!("error {e:?} does not mention {want}"));
                }
            }
            (Err(e), _) => fail(format!("kube-inject failed: {e}")),
            (Ok(_), "error") => fail("kube-inject accepted a bad input".into()),
            (Ok(out), _) => {
                let ours = docs(&out);
                let golden = docs(&read(case["golden"].as_str().unwrap()));
                if ours.len() != golden.len() {
                    fail(format!(
                        "{} documents, Istio has {}",
                        ours.len(),
                        golden.len()
                    ));
                }
                for (o, g) in ours.iter().zip(&golden) {
                    let (op, gp) = (pods(o), pods(g));
                    if gp.is_empty() && o != g {
                        fail(format!("pass-through document differs: {o} vs {g}"));
                    }
                    for (a, b) in op.iter().zip(&gp) {
                        for d in compare(a, b) {
                            fail(format!("kube-inject {d}"));
                        }
                    }
                }
            }
        }
    }

    // Webhook path: each workload's pod as an AdmissionReview.
    let webhook = by("webhook") || expect == "error";
    if webhook {
        t.webhook += 1;
        let inputs: Vec<(Value, Value)> = docs(&input).iter().flat_map(workload_pods).collect();
        let goldens: Vec<Value> = case["golden"]
            .as_str()
            .map(|g| docs(&read(g)).iter().flat_map(pods).collect())
            .unwrap_or_default();
        for (i, (p, w)) in inputs.iter().enumerate() {
            let ns = w["metadata"]["namespace"].as_str().unwrap_or("default");
            let pod = as_pod_of(p, ns, w);
            let body = serde_json::to_vec(&review_for(&pod, &format!("uid-{i}"), V1)).unwrap();
            let r = review(&body, &mesh, &ctx);
            let resp = &r.body["response"];
            if resp["uid"] != format!("uid-{i}") {
                fail(format!("webhook uid not echoed: {resp}"));
            }
            match expect {
                "error" => {
                    let want = case["error_contains"].as_str().unwrap();
                    let msg = resp["status"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_lowercase();
                    if resp["allowed"] != false
                        || !msg.contains(want)
                        || resp.get("patch").is_some()
                    {
                        fail(format!("webhook should deny mentioning {want}: {resp}"));
                    }
                }
                _ => {
                    if resp["allowed"] != true {
                        fail(format!("webhook denied: {resp}"));
                        continue;
                    }
                    let patched = apply_response(&pod, &r.body);
                    if expect == "skipped" && patched != pod {
                        fail("webhook changed a pod Istio skips".into());
                    }
                    if let Some(g) = goldens.get(i) {
                        for d in compare(&patched, g) {
                            fail(format!("webhook {d}"));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn istio_injection_cases() {
    let cases: Vec<Value> = serde_json::from_str(&read("cases.json")).unwrap();
    assert_eq!(cases.len(), 136);
    let mut t = Tally {
        kube_inject: 0,
        webhook: 0,
        skipped: Vec::new(),
        failures: Vec::new(),
    };
    for case in &cases {
        run_case(case, &mut t);
    }
    let checked = cases.len() - t.skipped.len();
    eprintln!("Ignored by the comparison:");
    for (what, why) in IGNORED {
        eprintln!("  - {what}: {why}");
    }
    eprintln!(
        "Skipped {} of {} cases (unsupported settings):",
        t.skipped.len(),
        cases.len()
    );
    for s in &t.skipped {
        eprintln!("  - {s}");
    }
    eprintln!(
        "Checked {checked} of {} cases ({} through kube-inject, {} through the webhook)",
        cases.len(),
        t.kube_inject,
        t.webhook
    );
    assert!(
        t.failures.is_empty(),
        "{} mismatches:\n{}",
        t.failures.len(),
        t.failures.join("\n")
    );
    assert!(checked >= 110, "only {checked} cases checked");
}
