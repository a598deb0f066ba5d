//! Annotation and label keys we honour, with Istio's meaning, and typed parsers that
//! reject bad values with a message naming the key, the value and what is wrong.
//!
//! Parsers follow Istio's validation (`pkg/kube/inject/validate.go`): port lists are
//! comma-separated `1..=65535`, CIDR lists are comma-separated prefixes, `*` is only
//! allowed where Istio allows it (include lists), booleans use Go's `ParseBool`.

use ipnet::IpNet;

use crate::capture::{InterceptionMode, Selection};

/// `sidecar.istio.io/*` pod annotations (and the inject label).
pub mod sidecar {
    pub const INJECT: &str = "sidecar.istio.io/inject";
    pub const STATUS: &str = "sidecar.istio.io/status";
    pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
    pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
    pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
    pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
    pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
    pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
    pub const COMPONENT_LOG_LEVEL: &str = "sidecar.istio.io/componentLogLevel";
    pub const AGENT_LOG_LEVEL: &str = "sidecar.istio.io/agentLogLevel";
    pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
    pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
    pub const REWRITE_APP_HTTP_PROBERS: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
    pub const USER_VOLUME: &str = "sidecar.istio.io/userVolume";
    pub const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";
    pub const TEMPLATES: &str = "inject.istio.io/templates";
    /// Readiness port of the sidecar's status server.
    pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
    pub const READINESS_APPLICATION_PORTS: &str =
        "readiness.status.sidecar.istio.io/applicationPorts";
    pub const READINESS_INITIAL_DELAY: &str =
        "readiness.status.sidecar.istio.io/initialDelaySeconds";
    pub const READINESS_PERIOD: &str = "readiness.status.sidecar.istio.io/periodSeconds";
    pub const READINESS_FAILURE_THRESHOLD: &str =
        "readiness.status.sidecar.istio.io/failureThreshold";
}

/// `traffic.sidecar.istio.io/*` pod annotations: what the redirect rules capture.
pub mod traffic {
    pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
    pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
    pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
    /// Newer name of [`KUBEVIRT_INTERFACES`]; wins when both are set.
    pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
    pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
}

/// `proxy.istio.io/config`: a ProxyConfig overlay (YAML or JSON) for one pod.
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
/// Revision label on namespaces and pods.
pub const REV: &str = "istio.io/rev";
/// Namespace label that turns injection on (`enabled`) or off (`disabled`).
pub const INJECTION: &str = "istio-injection";
/// Pod label marking a workload whose sidecar accepts mTLS (`istio`).
pub const TLS_MODE: &str = "security.istio.io/tlsMode";
/// Value of [`TLS_MODE`] for pods with a sidecar.
pub const TLS_MODE_ISTIO: &str = "istio";
pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
pub const NETWORK: &str = "topology.istio.io/network";
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";

/// Names of the containers we inject; users and tools match on them.
pub mod containers {
    pub const PROXY: &str = "istio-proxy";
    pub const INIT: &str = "istio-init";
    pub const VALIDATION: &str = "istio-validation";
    /// `istio-proxy`'s mode, its first argument after `mesh-proxy` (Istio:
    /// `pilot-agent proxy sidecar|router`). The CNI plugin reads it back: only
    /// sidecars are captured, gateways (`router`) never.
    pub const MODE_SIDECAR: &str = "sidecar";
    pub const MODE_ROUTER: &str = "router";
}

/// A bad annotation value. The message names the key, the value, the Istio check
/// it failed (users search for those names) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid annotation {key}: {value:?} is not a valid {check} value: {reason}")]
pub struct AnnotationError {
    pub key: String,
    pub value: String,
    /// Istio's name for the check, e.g. `includeIPRanges`.
    pub check: &'static str,
    pub reason: String,
}

fn err(key: &str, value: &str, check: &'static str, reason: impl Into<String>) -> AnnotationError {
    AnnotationError {
        key: key.to_string(),
        value: value.to_string(),
        check,
        reason: reason.into(),
    }
}

fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

/// One port, `1..=65535`.
pub fn parse_port(key: &str, value: &str, check: &'static str) -> Result<u16, AnnotationError> {
    let v = value.trim();
    match v.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(err(
            key,
            value,
            check,
            format!("port {p} is outside 1-65535"),
        )),
        Err(_) => Err(err(
            key,
            value,
            check,
            format!("{v:?} is not a port number"),
        )),
    }
}

/// A comma-separated port list; empty means none. `*` is rejected.
pub fn parse_port_list(
    key: &str,
    value: &str,
    check: &'static str,
) -> Result<Vec<u16>, AnnotationError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    items(value)
        .map(|p| {
            parse_port(key, p, check).map_err(|e| AnnotationError {
                value: value.to_string(),
                ..e
            })
        })
        .collect()
}

/// A port list where `*` means every port and empty means none.
pub fn parse_port_selection(
    key: &str,
    value: &str,
    check: &'static str,
) -> Result<Selection<u16>, AnnotationError> {
    match value.trim() {
        "*" => Ok(Selection::All),
        "" => Ok(Selection::None),
        _ => parse_port_list(key, value, check).map(Selection::Only),
    }
}

/// A comma-separated CIDR list; empty means none. `*` is rejected.
pub fn parse_cidr_list(
    key: &str,
    value: &str,
    check: &'static str,
) -> Result<Vec<IpNet>, AnnotationError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    items(value)
        .map(|c| {
            c.parse::<IpNet>().map_err(|_| {
                err(
                    key,
                    value,
                    check,
                    format!("{c:?} is not a CIDR (e.g. 10.0.0.0/8)"),
                )
            })
        })
        .collect()
}

/// A CIDR list where `*` means every address and empty means none.
pub fn parse_cidr_selection(
    key: &str,
    value: &str,
    check: &'static str,
) -> Result<Selection<IpNet>, AnnotationError> {
    match value.trim() {
        "*" => Ok(Selection::All),
        "" => Ok(Selection::None),
        _ => parse_cidr_list(key, value, check).map(Selection::Only),
    }
}

/// A comma-separated list of network interface names (Linux: 1-15 bytes, no `/`,
/// no whitespace).
pub fn parse_interfaces(
    key: &str,
    value: &str,
    check: &'static str,
) -> Result<Vec<String>, AnnotationError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    items(value)
        .map(|name| {
            if name.is_empty() || name.len() > 15 {
                Err(err(
                    key,
                    value,
                    check,
                    format!("interface name {name:?} must be 1-15 characters"),
                ))
            } else if name
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c == ':')
            {
                Err(err(
                    key,
                    value,
                    check,
                    format!("interface name {name:?} contains '/', ':' or whitespace"),
                ))
            } else {
                Ok(name.to_string())
            }
        })
        .collect()
}

/// A boolean as Go's `strconv.ParseBool` reads it (`1 t T TRUE true True`, and the
/// matching false forms), which is what Istio accepts in annotations.
pub fn parse_bool(key: &str, value: &str) -> Result<bool, AnnotationError> {
    match value.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(err(
            key,
            value,
            "bool",
            format!("{other:?} is not true or false"),
        )),
    }
}

/// `sidecar.istio.io/interceptionMode`: `REDIRECT`, `TPROXY` or `NONE`.
pub fn parse_interception_mode(
    key: &str,
    value: &str,
) -> Result<InterceptionMode, AnnotationError> {
    match value.trim() {
        "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Ok(InterceptionMode::Tproxy),
        "NONE" => Ok(InterceptionMode::None),
        _ => Err(err(
            key,
            value,
            "interceptionMode",
            "expected REDIRECT, TPROXY or NONE",
        )),
    }
}

/// A non-negative integer (seconds, thresholds).
pub fn parse_u32(key: &str, value: &str) -> Result<u32, AnnotationError> {
    value
        .trim()
        .parse::<u32>()
        .map_err(|_| err(key, value, "uint32", "expected a non-negative integer"))
}

/// Value of `sidecar.istio.io/inject` (label or annotation) as Istio's injector
/// reads it, case-insensitively: `y`, `yes`, `true`, `on` mean inject, an empty
/// or absent value leaves the decision to the namespace, anything else means
/// do not inject.
pub fn inject_override(value: Option<&str>) -> Option<bool> {
    match value?.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" => Some(true),
        "" => None,
        _ => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "traffic.sidecar.istio.io/excludeInboundPorts";

    #[test]
    fn port_lists() {
        assert_eq!(parse_port_list(K, "", "c").unwrap(), Vec::<u16>::new());
        assert_eq!(
            parse_port_list(K, "80, 443,8080", "c").unwrap(),
            vec![80, 443, 8080]
        );
        for bad in ["70000", "0", "bad", "80,,81", "*", "-1", "80;81"] {
            let e = parse_port_list(K, bad, "excludeInboundPorts").unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(K) && msg.contains(&format!("{bad:?}")),
                "{msg}"
            );
        }
        let msg = parse_port_list(K, "80,70000", "c").unwrap_err().to_string();
        assert!(
            msg.contains("70000") && msg.contains("outside 1-65535"),
            "{msg}"
        );
    }

    #[test]
    fn port_selection() {
        assert_eq!(parse_port_selection(K, "*", "c").unwrap(), Selection::All);
        assert_eq!(parse_port_selection(K, " ", "c").unwrap(), Selection::None);
        assert_eq!(
            parse_port_selection(K, "1,2", "c").unwrap(),
            Selection::Only(vec![1, 2])
        );
        assert!(parse_port_selection(K, "bad", "c").is_err());
    }

    #[test]
    fn cidr_lists() {
        let k = traffic::EXCLUDE_OUTBOUND_IP_RANGES;
        let v = parse_cidr_list(k, "10.96.0.2/24, fd00::/8", "c").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].to_string(),
            "10.96.0.2/24",
            "host bits are kept as written"
        );
        for bad in [
            "1.1.1.1/33",
            "*",
            "bad",
            "10.0.0.0",
            "10.0.0.0/8,",
            "::/129",
        ] {
            let msg = parse_cidr_list(k, bad, "excludeIPRanges")
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(k) && msg.contains(&format!("{bad:?}")),
                "{msg}"
            );
        }
        assert_eq!(parse_cidr_selection(k, "*", "c").unwrap(), Selection::All);
        assert_eq!(parse_cidr_selection(k, "", "c").unwrap(), Selection::None);
    }

    #[test]
    fn interfaces() {
        let k = traffic::KUBEVIRT_INTERFACES;
        assert_eq!(
            parse_interfaces(k, "net1, net2", "c").unwrap(),
            vec!["net1", "net2"]
        );
        for bad in ["a/b", "this-name-is-too-long", "net1,", "a b"] {
            assert!(parse_interfaces(k, bad, "c").is_err(), "{bad}");
        }
    }

    #[test]
    fn bools_and_modes() {
        for t in ["true", "1", "T", "True", "TRUE"] {
            assert!(parse_bool(sidecar::INJECT, t).unwrap());
        }
        for f in ["false", "0", "F", "False"] {
            assert!(!parse_bool(sidecar::INJECT, f).unwrap());
        }
        assert!(parse_bool(sidecar::INJECT, "yes").is_err());
        assert_eq!(inject_override(Some("yes")), Some(true));
        assert_eq!(inject_override(Some("TRUE")), Some(true));
        assert_eq!(
            inject_override(Some("1")),
            Some(false),
            "Istio reads YAML booleans, not ParseBool"
        );
        assert_eq!(inject_override(Some("")), None);
        assert_eq!(inject_override(None), None);
        assert_eq!(inject_override(Some("false")), Some(false));
        let k = sidecar::INTERCEPTION_MODE;
        assert_eq!(
            parse_interception_mode(k, "TPROXY").unwrap(),
            InterceptionMode::Tproxy
        );
        let msg = parse_interception_mode(k, "tproxy")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(k) && msg.contains("\"tproxy\""), "{msg}");
        assert!(parse_u32(sidecar::READINESS_PERIOD, "-3").is_err());
        assert_eq!(parse_port(sidecar::STATUS_PORT, "123", "c").unwrap(), 123);
    }
}
