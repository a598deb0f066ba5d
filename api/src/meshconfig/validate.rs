//! [`MeshConfig::validate`], the checks serde cannot do. Its own file because
//! it checks the access-log providers with `telemetry::resolve`, which itself
//! reads a `MeshConfig`: kept apart, `meshconfig` does not import it.

use super::{bad, is_dns_label, is_quantity, MeshConfig, MeshConfigError, SelectorOperator};

impl MeshConfig {
    /// Checks every field that can be wrong in a way serde cannot see. The error
    /// names the field (dotted camelCase path) and the value.
    pub fn validate(&self) -> Result<(), MeshConfigError> {
        if self.images.proxy.trim().is_empty() || self.images.proxy.contains(char::is_whitespace) {
            return Err(bad(
                "images.proxy",
                &self.images.proxy,
                "must be a non-empty image reference without spaces",
            ));
        }
        for (i, s) in self.images.pull_secrets.iter().enumerate() {
            if s.is_empty() {
                return Err(bad(
                    &format!("images.pullSecrets[{i}]"),
                    s,
                    "must be a secret name",
                ));
            }
        }
        for (kind, map) in [
            ("requests", &self.proxy.resources.requests),
            ("limits", &self.proxy.resources.limits),
        ] {
            for (name, q) in map {
                if !is_quantity(q) {
                    return Err(bad(
                        &format!("proxy.resources.{kind}.{name}"),
                        q,
                        "is not a Kubernetes quantity (e.g. 100m, 128Mi, 2)",
                    ));
                }
            }
        }
        const LEVELS: [&str; 7] = [
            "trace", "debug", "info", "warning", "warn", "error", "critical",
        ];
        if !LEVELS.contains(&self.proxy.log_level.as_str()) && self.proxy.log_level != "off" {
            return Err(bad(
                "proxy.logLevel",
                &self.proxy.log_level,
                "must be one of trace, debug, info, warning, error, critical, off",
            ));
        }
        if self.proxy.readiness_period_seconds == 0 {
            return Err(bad("proxy.readinessPeriodSeconds", 0, "must be at least 1"));
        }
        if self.proxy.readiness_failure_threshold == 0 {
            return Err(bad(
                "proxy.readinessFailureThreshold",
                0,
                "must be at least 1",
            ));
        }
        let td = &self.trust_domain;
        if td.is_empty()
            || !td.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    })
            })
        {
            return Err(bad(
                "trustDomain",
                td,
                "must be a lower-case DNS name such as cluster.local",
            ));
        }
        if !is_dns_label(&self.root_namespace) {
            return Err(bad(
                "rootNamespace",
                &self.root_namespace,
                "must be a namespace name (lower-case DNS label)",
            ));
        }
        match self.agent_address.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty()
                    && !host.contains(char::is_whitespace)
                    && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return Err(bad(
                    "agentAddress",
                    &self.agent_address,
                    "must be host:port, e.g. mesh-agent.istio-system.svc:15012",
                ))
            }
        }
        if self.cluster_id.is_empty() {
            return Err(bad("clusterId", "", "must not be empty"));
        }
        if !self.revision.is_empty() && !is_dns_label(&self.revision) {
            return Err(bad(
                "revision",
                &self.revision,
                "must be a lower-case DNS label",
            ));
        }
        for (field, sels) in [
            ("neverInjectSelector", &self.never_inject_selector),
            ("alwaysInjectSelector", &self.always_inject_selector),
        ] {
            for (i, sel) in sels.iter().enumerate() {
                for (j, r) in sel.match_expressions.iter().enumerate() {
                    let needs_values =
                        matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
                    if needs_values == r.values.is_empty() {
                        return Err(bad(
                            &format!("{field}[{i}].matchExpressions[{j}].values"),
                            format!("{:?}", r.values),
                            format!(
                                "operator {:?} {} values",
                                r.operator,
                                if needs_values { "needs" } else { "takes no" }
                            ),
                        ));
                    }
                }
            }
        }
        self.default_config.validate("defaultConfig")?;
        self.tracing_view(None)
            .map_err(|e| bad(&e.field, e.value, e.reason))?;
        self.access_log_view()
            .map_err(|e| bad("accessLogFormat", &self.access_log_format, e.to_string()))?;
        crate::telemetry::resolve::check_mesh(self)
            .map_err(|e| bad(&e.field, e.value, e.reason))?;
        let r = &self.redirect;
        if r.status_port == Some(0) {
            return Err(bad(
                "redirect.statusPort",
                0,
                "must be 1-65535 (leave it out, or null, for no status port)",
            ));
        }
        for (field, list) in [
            ("redirect.excludeInboundPorts", &r.exclude_inbound_ports),
            ("redirect.includeOutboundPorts", &r.include_outbound_ports),
            ("redirect.excludeOutboundPorts", &r.exclude_outbound_ports),
        ] {
            if list.contains(&0) {
                return Err(bad(field, 0, "port 0 is not a port"));
            }
        }
        Ok(())
    }
}
