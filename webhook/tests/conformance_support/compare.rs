//! The comparison of our injected pod with Istio's golden one: every behavioural
//! difference, with quantities, flags and probers normalised. Separate from
//! `conformance.rs` so the test reads as the run of each case.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

const ISTIO_ONLY_VOLUMES: [&str; 4] = [
    "workload-socket",
    "credential-socket",
    "workload-certs",
    "istio-ca-crl",
];

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
pub(crate) fn compare(ours: &Value, istio: &Value) -> Vec<String> {
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
