//! How a case's settings map onto our MeshConfig and InjectContext, or why a case
//! is skipped. Separate from `conformance.rs` so the test reads as the run of
//! each case, not as the table of Istio's install flags.

use mesh_api::meshconfig::{MeshConfig, NativeSidecars, PullPolicy};
use mesh_api::{InterceptionMode, Selection};
use mesh_webhook::InjectContext;
use serde_json::Value;

use crate::common::{docs, pods, read};

/// Maps a case's settings onto our MeshConfig, or says why we cannot.
pub(crate) fn settings(case: &Value) -> Result<(MeshConfig, InjectContext), String> {
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
