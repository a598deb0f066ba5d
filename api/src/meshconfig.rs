//! The mesh config file: the content of the mesh ConfigMap that the injector (and
//! later the agent) read. Typed, camelCase, unknown fields rejected, and checked by
//! [`MeshConfig::validate`] with messages naming the field and the bad value.
//!
//! It gathers what Istio spreads over the `istio` mesh config and the
//! `istio-sidecar-injector` values: images, proxy resources, CNI on/off, native
//! sidecars, defaults for `holdApplicationUntilProxyStarts` and probe rewriting,
//! trust domain, agent address, injection policy and selectors, the `defaultConfig`
//! ProxyConfig subset, and the [`RedirectDefaults`] the redirect rules start from.
//! Parsing a file is the caller's job (any serde format); this module does no I/O.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::redirect::{InterceptionMode, RedirectDefaults, Selection};

mod validate;

/// A bad mesh config value: which field, which value, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mesh config field {field}: {value:?} {reason}")]
pub struct MeshConfigError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

fn bad(field: &str, value: impl ToString, reason: impl Into<String>) -> MeshConfigError {
    MeshConfigError {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Whole mesh configuration. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    pub images: Images,
    pub proxy: ProxyValues,
    pub cni: Cni,
    pub native_sidecars: NativeSidecars,
    pub hold_application_until_proxy_starts: bool,
    #[serde(rename = "rewriteAppHTTPProbers")]
    pub rewrite_app_http_probers: bool,
    pub trust_domain: String,
    /// Namespace of the control plane (`istio-system`).
    pub root_namespace: String,
    /// `host:port` of `mesh-agent` (config stream and CA).
    pub agent_address: String,
    pub cluster_id: String,
    /// Revision written to `istio.io/rev` and the status annotation.
    pub revision: String,
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    pub access_log_file: String,
    pub access_log_encoding: AccessLogEncoding,
    /// Envoy `%COMMAND%` format (`accessLogFormat`); empty: the default line.
    pub access_log_format: String,
    pub never_inject_selector: Vec<LabelSelector>,
    pub always_inject_selector: Vec<LabelSelector>,
    pub policy: InjectionPolicy,
    pub default_config: ProxyConfig,
    /// Istio's `enableTracing` (default true).
    pub enable_tracing: bool,
    pub extension_providers: Vec<crate::meshtracing::ExtensionProvider>,
    pub default_providers: crate::meshtracing::DefaultProviders,
    #[serde(with = "StrictRedirectDefaults")]
    pub redirect: RedirectDefaults,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            images: Images::default(),
            proxy: ProxyValues::default(),
            cni: Cni::default(),
            native_sidecars: NativeSidecars::Auto,
            hold_application_until_proxy_starts: false,
            rewrite_app_http_probers: true,
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            agent_address: "mesh-agent.istio-system.svc:15012".into(),
            cluster_id: "Kubernetes".into(),
            revision: "default".into(),
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            access_log_file: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            access_log_format: String::new(),
            never_inject_selector: Vec::new(),
            always_inject_selector: Vec::new(),
            policy: InjectionPolicy::Enabled,
            default_config: ProxyConfig::default(),
            enable_tracing: true,
            extension_providers: Vec::new(),
            default_providers: Default::default(),
            redirect: RedirectDefaults::default(),
        }
    }
}

/// [`RedirectDefaults`] as read from the file: same fields, but unknown ones are
/// rejected (the shared type itself is lenient).
#[derive(Deserialize, Serialize)]
#[serde(
    remote = "RedirectDefaults",
    rename_all = "camelCase",
    deny_unknown_fields
)]
struct StrictRedirectDefaults {
    #[serde(default = "d_uid")]
    proxy_uid: u32,
    #[serde(default = "d_uid")]
    proxy_gid: u32,
    #[serde(default)]
    interception_mode: InterceptionMode,
    #[serde(default = "d_all")]
    include_ip_ranges: Selection<IpNet>,
    #[serde(default)]
    exclude_ip_ranges: Vec<IpNet>,
    #[serde(default = "d_all")]
    include_inbound_ports: Selection<u16>,
    #[serde(default)]
    exclude_inbound_ports: Vec<u16>,
    #[serde(default)]
    include_outbound_ports: Vec<u16>,
    #[serde(default)]
    exclude_outbound_ports: Vec<u16>,
    #[serde(default)]
    kubevirt_interfaces: Vec<String>,
    #[serde(default)]
    exclude_interfaces: Vec<String>,
    #[serde(default = "d_status")]
    status_port: Option<u16>,
    #[serde(default)]
    redirect_dns: bool,
    #[serde(default)]
    capture_all_dns: bool,
    #[serde(default)]
    drop_invalid: bool,
}

fn d_uid() -> u32 {
    crate::ports::PROXY_UID
}
fn d_all<T>() -> Selection<T> {
    Selection::All
}
fn d_status() -> Option<u16> {
    Some(crate::ports::STATUS)
}

/// One image holds every binary (`mesh-proxy`, `mesh-cni`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Images {
    pub proxy: String,
    pub pull_policy: Option<PullPolicy>,
    /// Added to every injected pod's `imagePullSecrets`.
    pub pull_secrets: Vec<String>,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            proxy: "ghcr.io/mesh/mesh-proxy:latest".into(),
            pull_policy: None,
            pull_secrets: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The sidecar's container settings (Istio's `global.proxy.*` values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyValues {
    pub resources: Resources,
    /// Proxy log level (`sidecar.istio.io/logLevel` overrides it).
    pub log_level: String,
    pub component_log_level: String,
    pub readiness_initial_delay_seconds: u32,
    pub readiness_period_seconds: u32,
    pub readiness_failure_threshold: u32,
    /// A startup probe on `/healthz/ready` so slow starts are not killed.
    pub startup_probe: bool,
}

impl Default for ProxyValues {
    fn default() -> Self {
        ProxyValues {
            resources: Resources::default(),
            log_level: "warning".into(),
            component_log_level: "misc:error".into(),
            readiness_initial_delay_seconds: 0,
            readiness_period_seconds: 15,
            readiness_failure_threshold: 4,
            startup_probe: true,
        }
    }
}

/// Kubernetes quantities by resource name (`cpu`, `memory`, ...). A resource left
/// out is not set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(deserialize_with = "quantity_map")]
    pub requests: BTreeMap<String, String>,
    #[serde(deserialize_with = "quantity_map")]
    pub limits: BTreeMap<String, String>,
}

/// Quantities as Kubernetes YAML writes them: `cpu: 2` is as good as `cpu: "2"`.
fn quantity_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Q {
        S(String),
        U(u64),
        F(f64),
    }
    let m = BTreeMap::<String, Q>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, q)| {
            let v = match q {
                Q::S(s) => s,
                Q::U(u) => u.to_string(),
                Q::F(f) => f.to_string(),
            };
            (k, v)
        })
        .collect())
}

impl Default for Resources {
    fn default() -> Self {
        let m = |a: &str, b: &str| {
            BTreeMap::from([
                ("cpu".to_string(), a.to_string()),
                ("memory".into(), b.into()),
            ])
        };
        Resources {
            requests: m("100m", "128Mi"),
            limits: m("2", "1Gi"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Cni {
    /// The node CNI plugin writes the redirect rules: inject `istio-validation`
    /// instead of the privileged `istio-init`.
    pub enabled: bool,
}

/// Whether `istio-proxy` is a native sidecar (init container, `restartPolicy: Always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NativeSidecars {
    #[serde(alias = "enabled", alias = "true")]
    On,
    #[serde(alias = "disabled", alias = "false")]
    Off,
    /// On when every node's kubelet is at least 1.33 (or when that is unknown).
    Auto,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    #[default]
    AllowAny,
    RegistryOnly,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    pub mode: OutboundMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AccessLogEncoding {
    Text,
    Json,
}

/// Istio's `policy`: whether pods without an explicit opt-in/opt-out get a sidecar
/// (in namespaces where injection is on). `memberRoll` is OpenShift Service
/// Mesh 2.x's rule: only namespaces labelled `maistra.io/member-of=<root
/// namespace>` are in the mesh (the namespace labels are ignored), and there
/// only pods that opt in with `sidecar.istio.io/inject: "true"` are injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InjectionPolicy {
    Enabled,
    Disabled,
    #[serde(rename = "memberRoll")]
    MemberRoll,
}

/// A Kubernetes label selector (`matchLabels` + `matchExpressions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Kubernetes semantics: every term must hold; an empty selector matches all.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let got = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => got.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => !got.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::Exists => got.is_some(),
                    SelectorOperator::DoesNotExist => got.is_none(),
                }
            })
    }
}

/// The subset of Istio's ProxyConfig we honour (`defaultConfig`, and the
/// `proxy.istio.io/config` pod annotation over it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Duration such as `45s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_drain_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interception_mode: Option<InterceptionMode>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<crate::meshtracing::TracingConfig>,
}

impl ProxyConfig {
    /// `over` wins field by field; metadata maps are merged.
    pub fn overlay(&self, over: &ProxyConfig) -> ProxyConfig {
        let mut proxy_metadata = self.proxy_metadata.clone();
        proxy_metadata.extend(over.proxy_metadata.clone());
        ProxyConfig {
            concurrency: over.concurrency.or(self.concurrency),
            drain_duration: over.drain_duration.clone().or(self.drain_duration.clone()),
            termination_drain_duration: over
                .termination_drain_duration
                .clone()
                .or(self.termination_drain_duration.clone()),
            hold_application_until_proxy_starts: over
                .hold_application_until_proxy_starts
                .or(self.hold_application_until_proxy_starts),
            interception_mode: over.interception_mode.or(self.interception_mode),
            proxy_metadata,
            tracing: match (&self.tracing, &over.tracing) {
                (Some(a), Some(b)) => Some(a.overlay(b)),
                (a, b) => b.clone().or(a.clone()),
            },
        }
    }

    pub fn validate(&self, prefix: &str) -> Result<(), MeshConfigError> {
        for (name, v) in [
            ("drainDuration", &self.drain_duration),
            ("terminationDrainDuration", &self.termination_drain_duration),
        ] {
            if let Some(d) = v {
                if !is_duration(d) {
                    return Err(bad(
                        &format!("{prefix}.{name}"),
                        d,
                        "is not a duration (e.g. 45s, 1m30s, 500ms)",
                    ));
                }
            }
        }
        if self.concurrency == Some(0) {
            // Istio reads 0 as "one worker per CPU"; we accept it.
        }
        for k in self.proxy_metadata.keys() {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad(
                    &format!("{prefix}.proxyMetadata"),
                    k,
                    "is not an environment variable name ([A-Za-z0-9_]+)",
                ));
            }
        }
        Ok(())
    }
}

/// Whether `s` is a duration as every other duration in the mesh is parsed
/// ([`crate::values::duration`]).
pub fn is_duration(s: &str) -> bool {
    crate::values::duration(s).is_ok()
}

/// A Kubernetes quantity (`100m`, `1Gi`, `2`, `1.5`, `1e3`): a decimal number and an
/// optional suffix.
pub fn is_quantity(s: &str) -> bool {
    let s = s.trim();
    let n = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(n);
    if num.is_empty() || num.parse::<f64>().is_err() {
        return false;
    }
    const SUFFIXES: [&str; 14] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    SUFFIXES.contains(&suffix)
        || (suffix.starts_with(['e', 'E']) && suffix[1..].parse::<i32>().is_ok())
}

/// Is `s` a DNS-1123 label (what namespace and many object names must be)?
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl MeshConfig {
    /// The access log every proxy writes: on when `accessLogFile` is set. The
    /// proxy writes to its own stdout whatever the path, as the sidecar's
    /// stdout is the container log (`/dev/stdout` is what Istio users set).
    pub fn access_log_view(
        &self,
    ) -> Result<Option<crate::accesslog::AccessLogView>, crate::accesslog::FormatError> {
        if self.access_log_file.trim().is_empty() {
            return Ok(None);
        }
        let view = crate::accesslog::AccessLogView {
            encoding: match self.access_log_encoding {
                AccessLogEncoding::Text => crate::accesslog::Encoding::Text,
                AccessLogEncoding::Json => crate::accesslog::Encoding::Json,
            },
            format: Some(self.access_log_format.clone()).filter(|f| !f.trim().is_empty()),
            filter: None,
        };
        crate::accesslog::compile(&view)?;
        Ok(Some(view))
    }

    /// The proxy config's tracing: a pod's `proxy.istio.io/config` tracing
    /// over `defaultConfig.tracing`, field by field (Istio's ProxyConfig merge).
    pub fn proxy_tracing(
        &self,
        pod: Option<&crate::meshtracing::TracingConfig>,
    ) -> Option<crate::meshtracing::TracingConfig> {
        match (&self.default_config.tracing, pod) {
            (Some(a), Some(b)) => Some(a.overlay(b)),
            (a, b) => b.cloned().or(a.clone()),
        }
    }

    /// The tracing every proxy applies ([`crate::meshtracing::compile`]), with
    /// a pod's `proxy.istio.io/config` tracing over `defaultConfig.tracing`.
    pub fn tracing_view(
        &self,
        pod: Option<&crate::meshtracing::TracingConfig>,
    ) -> Result<Option<crate::tracing::TracingView>, crate::tracing::TracingError> {
        crate::meshtracing::compile(
            self.enable_tracing,
            self.proxy_tracing(pod).as_ref(),
            &self.extension_providers,
            &self.default_providers,
        )
    }
}

#[cfg(test)]
mod tests;
